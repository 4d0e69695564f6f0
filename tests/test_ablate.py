"""`mtv ablate`: the four rungs switch objectives on one at a time, share everything else, and are compared."""

import json

import pytest
import yaml

from fixtures import train_tree
from mtv.ablate import RUNGS, ablate, rung_config
from mtv.errors import MTVError
from mtv.world import generate_world


def test_rungs_add_one_objective_at_a_time(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(train_tree(tmp_path / "x", tmp_path, steps=4, optim={"warmup_steps": 1})))
    enabled = []
    for rung, switches in RUNGS:
        cfg = rung_config(str(path), tmp_path, rung, switches, ["steps=5"])
        assert cfg.run_dir == str(tmp_path / rung) and cfg.steps == 5 and cfg.vl.enabled
        enabled.append([cfg.ssl.enabled, cfg.grounding.enabled, cfg.depth.enabled])
    assert enabled == [[False, False, False], [True, False, False], [True, True, False], [True, True, True]]


def test_ablation_needs_eval_data(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(train_tree(tmp_path / "x", tmp_path)))
    with pytest.raises(MTVError, match="eval.data is not set"):
        ablate(path, tmp_path / "out")


@pytest.mark.slow
def test_ablation_writes_table_json_and_radar(tmp_path):
    generate_world(tmp_path / "train", 32, seed=0, size=32, shard_size=8, progress=False)
    generate_world(tmp_path / "val", 16, seed=1, size=32, shard_size=8, progress=False)
    tree = train_tree(tmp_path / "x", tmp_path / "train", steps=2, optim={"warmup_steps": 1},
                      eval={"data": str(tmp_path / "val"), "suite": "zeroshot,retrieval,corr_geo,corr_sem,depth_head,grounding"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    summary = ablate(path, tmp_path / "out")
    assert list(summary["rungs"]) == ["VL", "+SSL", "+Grounding", "+Depth"]
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved["rungs"]["VL"]["zeroshot_top1"] == summary["rungs"]["VL"]["zeroshot_top1"]
    assert "grounding_acc50" not in saved["rungs"]["VL"] and "grounding_acc50" in saved["rungs"]["+Grounding"]
    assert "depth_head_absrel" in saved["rungs"]["+Depth"]
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| metric | VL | +SSL | +Grounding | +Depth |" in md
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000
