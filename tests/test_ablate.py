"""`mtv ablate`: each design's rungs switch objectives, share everything else, run over independent seeds, resume
without redoing finished work, and are compared with paired t intervals (mtv.stats)."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

import mtv.ablate
from fixtures import train_tree
from mtv import stats
from mtv.ablate import ablate, comparisons, designs, rung_config, rung_dir
from mtv.config import dump_config
from mtv.errors import MTVError
from mtv.world import generate_world


def write_config(tmp_path, **extra):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(train_tree(tmp_path / "x", tmp_path, steps=4, optim={"warmup_steps": 1}, **extra)))
    return path


def test_stats_match_a_hand_computation():
    assert stats.mean([1, 2, 3]) == 2 and stats.std([1, 2, 3]) == pytest.approx(1.0)
    lo, hi = stats.ci95([1, 2, 3])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * std 1 / sqrt(3)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert stats.summarize([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1}


def test_paired_difference_is_significant_only_out_of_the_noise():
    old = [10.0, 11.0, 12.0]
    clear = stats.paired([15.1, 15.9, 17.0], old)  # +5 with a spread of 0.1 between seeds
    assert clear["diff_mean"] == pytest.approx(5.0) and clear["significant"] and clear["better"] is True
    noise = stats.paired([10.01 + 1, 11.01 - 1, 12.01], old)  # +0.01 with a spread of 1
    assert noise["diff_mean"] == pytest.approx(0.01) and not noise["significant"] and noise["better"] is None
    rmse = stats.paired([15.1, 15.9, 17.0], old, lower_is_better=True)  # same shift, but higher rmse is worse
    assert rmse["diff_mean"] == pytest.approx(5.0) and rmse["significant"] and rmse["better"] is False
    one = stats.paired([15.0], [10.0])
    assert one == {"diff_mean": 5.0, "ci95": None, "significant": False, "better": None}


@pytest.mark.parametrize("design, expected", [
    ("ladder", {"VL": [], "+SSL": ["ssl"], "+Grounding": ["ssl", "grounding"],
                "+Depth": ["ssl", "grounding", "depth"]}),
    ("leave-one-out", {"all": ["ssl", "grounding", "depth"], "−SSL": ["grounding", "depth"],
                       "−Grounding": ["ssl", "depth"], "−Depth": ["ssl", "grounding"]}),
    ("pairs", {"VL": [], "VL+SSL": ["ssl"], "VL+Grounding": ["grounding"], "VL+Depth": ["depth"]}),
])
def test_each_design_switches_its_objectives(tmp_path, design, expected):
    path = write_config(tmp_path)
    enabled = {}
    for rung, switches in designs()[design]:
        cfg = rung_config(str(path), tmp_path / rung_dir(switches), switches, ["steps=5"], seed=0)
        assert cfg.run_dir == str(tmp_path / "+".join(["vl", *expected[rung]])) and cfg.steps == 5 and cfg.vl.enabled
        enabled[rung] = [name for name in ("ssl", "grounding", "depth") if getattr(cfg, name).enabled]
    assert enabled == expected
    assert all(rung in expected and against in expected for rung, against in comparisons()[design])


def test_bad_design_seeds_or_missing_eval_data_are_one_line_errors(tmp_path):
    with pytest.raises(MTVError, match="unknown design 'zigzag'"):
        ablate(write_config(tmp_path, eval={"data": str(tmp_path)}), tmp_path / "out", design="zigzag")
    with pytest.raises(MTVError, match="seeds must be at least 1"):
        ablate(write_config(tmp_path, eval={"data": str(tmp_path)}), tmp_path / "out", seeds=0)
    with pytest.raises(MTVError, match="eval.data is not set"):
        ablate(write_config(tmp_path), tmp_path / "out")


@pytest.fixture
def fake_stages(monkeypatch):
    """train/export/run_suite replaced by recorders; the report's metrics depend on the rung and the seed."""
    calls = {"train": [], "export": [], "eval": []}

    def train(cfg, resume=False):
        calls["train"].append((cfg.run_dir, cfg.seed, resume))
        (Path(cfg.run_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
        dump_config(cfg, Path(cfg.run_dir) / "config.yaml")
        (Path(cfg.run_dir) / "checkpoints" / "step_00000004.pt").write_bytes(b"")

    def export(run, out):
        calls["export"].append(str(run))
        return str(out)

    def run_suite(model, data, out, seed, **_):
        calls["eval"].append((str(out), seed))
        gain = Path(out).parent.parent.name.count("+")  # objectives switched on: OUT/<rung>/seed<k>/eval
        report = {"metrics": {"zeroshot_top1": 0.1 * gain + 0.01 * seed, "retrieval_i2t_r1": 0.2 + 0.001 * seed,
                              "depth_rmse": 2.0 - 0.1 * gain},
                  "metrics_floor": {"zeroshot_top1": 0.05, "retrieval_i2t_r1": 0.01, "depth_rmse": 3.0}}
        Path(out).mkdir(parents=True)
        (Path(out) / "report.json").write_text(json.dumps(report))
        return report

    for name, fake in [("train", train), ("export", export), ("run_suite", run_suite)]:
        monkeypatch.setattr(mtv.ablate, name, fake)
    return calls


def test_seeds_are_independent_runs(tmp_path, fake_stages):
    path = write_config(tmp_path, eval={"data": str(tmp_path)}, seed=7)
    result = ablate(path, tmp_path / "out", seeds=2, design="pairs")
    vl = [(d, seed) for d, seed, _ in fake_stages["train"] if "/vl/" in d + "/"]
    assert vl == [(str(tmp_path / "out" / "vl" / "seed7"), 7), (str(tmp_path / "out" / "vl" / "seed8"), 8)]
    assert [seed for _, seed in fake_stages["eval"]][:2] == [7, 8]  # the eval seed follows the training seed
    assert result["seeds"] == [7, 8] and list(result["runs"]["VL+SSL"]) == ["7", "8"]
    assert result["summary"]["VL+SSL"]["zeroshot_top1"]["n"] == 2


def test_ablation_json_and_md_carry_spread_comparisons_and_floor(tmp_path, fake_stages):
    result = ablate(write_config(tmp_path, eval={"data": str(tmp_path)}), tmp_path / "out", seeds=3)
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved == result and saved["design"] == "ladder" and saved["floor"]["depth_rmse"] == 3.0
    assert "prior" not in saved  # the fake reports carry no metrics_prior
    top1 = saved["summary"]["+SSL"]["zeroshot_top1"]
    assert top1["mean"] == pytest.approx(0.11) and top1["std"] == pytest.approx(0.01)
    ssl = {c["metric"]: c for c in saved["comparisons"] if c["rung"] == "+SSL"}
    assert ssl["zeroshot_top1"]["diff_mean"] == pytest.approx(0.1) and ssl["zeroshot_top1"]["better"] is True
    assert ssl["depth_rmse"]["significant"] and ssl["depth_rmse"]["better"] is True  # rmse down by 0.1
    assert not ssl["retrieval_i2t_r1"]["significant"]  # the same on every seed: no difference at all
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| metric | VL | +SSL | +Grounding | +Depth | untrained floor |" in md
    assert "| zeroshot_top1 | 1.0% ± 1.0% | 11.0% ± 1.0% |" in md
    assert "| zeroshot_top1 | +SSL vs VL | +10.0% [+10.0%, +10.0%] | **significant** ↑ better |" in md
    assert "| retrieval_i2t_r1 | +SSL vs VL | 0.0% [0.0%, 0.0%] | within noise |" in md
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000


def test_rerun_redoes_only_the_unfinished_rung_and_seed(tmp_path, fake_stages):
    path, out = write_config(tmp_path, eval={"data": str(tmp_path)}), tmp_path / "out"
    ablate(path, out, seeds=2)
    assert len(fake_stages["train"]) == len(fake_stages["eval"]) == 8
    (out / "vl+ssl" / "seed1" / "eval" / "report.json").unlink()
    (out / "vl+ssl" / "seed1" / "eval").rmdir()
    for recorded in fake_stages.values():
        recorded.clear()
    result = ablate(path, out, seeds=2)
    redone = str(out / "vl+ssl" / "seed1")
    assert fake_stages == {"train": [(redone, 1, True)], "export": [redone], "eval": [(redone + "/eval", 1)]}
    assert list(result["runs"]["+SSL"]) == ["0", "1"]


def test_a_finished_run_made_with_another_config_is_refused_not_reused(tmp_path, fake_stages):
    path, out = write_config(tmp_path, eval={"data": str(tmp_path)}), tmp_path / "out"
    ablate(path, out, seeds=1, overrides=["data.crop_scale=[0.5,1.0]"])
    ablate(path, out, seeds=1, overrides=["data.crop_scale=[0.5, 1.0]"])  # the same config: every run reused
    assert len(fake_stages["train"]) == 4
    with pytest.raises(MTVError, match=r"vl/seed0: was made with data.crop_scale=\[0.5, 1.0\], the ablation now "
                                       r"says \[1.0, 1.0\]; remove that folder"):
        ablate(path, out, seeds=1)
    # Moved, and asked for other SSL settings, the VL rung (SSL off) is reused; the removed +SSL rung is trained
    # again, and +Grounding, made with the old SSL settings, is refused.
    moved = tmp_path / "moved"
    out.rename(moved)
    shutil.rmtree(moved / "vl+ssl")
    with pytest.raises(MTVError, match=r"vl\+ssl\+grounding/seed0: was made with ssl.student_temp=0.1, the "
                                       r"ablation now says 0.2"):
        ablate(path, moved, seeds=1, overrides=["data.crop_scale=[0.5,1.0]", "ssl.student_temp=0.2"])
    assert [run for run, _, _ in fake_stages["train"][4:]] == [str(moved / "vl+ssl" / "seed0")]


@pytest.mark.slow
def test_ablation_writes_table_json_and_radar(tmp_path):
    generate_world(tmp_path / "train", 32, seed=0, size=32, shard_size=8, progress=False)
    generate_world(tmp_path / "val", 16, seed=1, size=32, shard_size=8, progress=False)
    tree = train_tree(tmp_path / "x", tmp_path / "train", steps=2, optim={"warmup_steps": 1},
                      eval={"data": str(tmp_path / "val"), "suite": "zeroshot,retrieval,corr_geo,corr_sem,depth_head,grounding"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    summary = ablate(path, tmp_path / "out", seeds=2)
    assert list(summary["runs"]) == ["VL", "+SSL", "+Grounding", "+Depth"] and list(summary["runs"]["VL"]) == ["0", "1"]
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved["runs"]["VL"]["1"]["zeroshot_top1"] == summary["runs"]["VL"]["1"]["zeroshot_top1"]
    assert "grounding_acc50" not in saved["summary"]["VL"] and saved["summary"]["+Grounding"]["grounding_acc50"]["n"] == 2
    assert "depth_head_absrel" in saved["summary"]["+Depth"]
    assert {(c["rung"], c["against"]) for c in saved["comparisons"]} == set(comparisons()["ladder"])
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| metric | VL | +SSL | +Grounding | +Depth |" in md and "| +SSL vs VL |" in md
    assert (tmp_path / "out" / "ablation.png").stat().st_size > 10_000


def test_cli_passes_seeds_design_and_overrides(tmp_path, fake_stages, capsys):
    from mtv.cli import main

    path = str(write_config(tmp_path, eval={"data": str(tmp_path)}))
    assert main(["ablate", "--config", path, "--out", str(tmp_path / "out"), "--seeds", "2",
                 "--design", "leave-one-out", "seed=4"]) == 0
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert saved["design"] == "leave-one-out" and saved["seeds"] == [4, 5] and saved["overrides"] == ["seed=4"]
    assert main(["ablate", "--config", path, "--out", str(tmp_path / "o2"), "--design", "nope"]) == 2
    assert main(["ablate", "--config", path, "--out", str(tmp_path / "o3"), "--seeds", "0"]) == 2
    assert "seeds must be at least 1" in capsys.readouterr().err
