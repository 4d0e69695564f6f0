from importlib import resources
from pathlib import Path

import pytest

from mtv.ablate import designs, rung_config
from mtv.config import build_config, describe, first_difference, load_config, parse_overrides
from mtv.errors import MTVError

BASE = {"run_dir": "r", "data": {"train": "d"}, "steps": 10, "batch_size": 4, "optim": {"warmup_steps": 1}}


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_overrides_are_typed_and_nested(tmp_path):
    path = write(tmp_path, "run_dir: r\ndata: {train: d}\nsteps: 10\nbatch_size: 4\noptim: {warmup_steps: 1}\n")
    cfg = load_config(path, ["optim.lr=3e-4", "data.workers=0", "model.preset=base", "steps=20"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.data.workers == 0
    assert cfg.model.preset == "base" and cfg.steps == 20 and cfg.optim.warmup_steps == 1


@pytest.mark.parametrize("tree, words", [
    ({**BASE, "optim": {"lrr": 1}}, ["unknown key optim.lrr"]),
    ({**BASE, "batch_size": "many"}, ["batch_size", "'many'"]),
    ({**BASE, "model": {"preset": "huge"}}, ["model.preset"]),
    ({**BASE, "optim": {"warmup_steps": 10}}, ["warmup_steps (10) must be below steps (10)"]),
    ({k: v for k, v in BASE.items() if k != "steps"}, ["missing required key steps"]),
])
def test_bad_configs_name_the_key(tree, words):
    with pytest.raises(MTVError) as err:
        build_config(tree, "c.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("c.yaml")
    for w in words:
        assert w in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(MTVError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(MTVError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2\n"))
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("run_dir: runs/caf\xe9\n".encode("latin-1"))
    with pytest.raises(MTVError, match=r"latin1.yaml: not UTF-8 text \(byte 17\); save the config as UTF-8"):
        load_config(latin1)
    with pytest.raises(MTVError, match="key=value"):
        parse_overrides(["optim.lr"])


def test_describe_lists_every_leaf():
    text = describe()
    for key in ("data.train = (required)", "optim.lr = 0.001", "model.init_logit_scale = 10.0",
                "model.init_logit_bias = -10.0", "vl.distributed = 'ring'", "ssl.n_local = 6", "grounding.max_boxes = 10", "depth.grad_weight = 0.5"):
        assert key in text


def test_first_difference_names_the_nested_key_and_ignores_skipped_and_added_keys():
    saved = {"steps": 10, "depth": {"weight": 8.0, "layers": [1, 2]}, "run_dir": "a"}
    assert first_difference(saved, {"steps": 10, "depth": {"weight": 8.0, "layers": [1, 3]}, "run_dir": "a"}) \
        == ("depth.layers", [1, 2], [1, 3])
    same = {"steps": 10, "depth": {"weight": 8.0, "layers": [1, 2], "added": 1}, "run_dir": "b", "new": {}}
    assert first_difference(saved, same, frozenset({"run_dir"})) is None
    assert first_difference(saved, same) == ("run_dir", "a", "b")
    assert first_difference(saved, {"steps": 10}) == ("depth", {"weight": 8.0, "layers": [1, 2]}, None)


@pytest.mark.parametrize("name", ["demo.yaml", "ablation.yaml"])
def test_the_shipped_configs_validate_and_every_ablation_rung_builds(name):
    path = str(resources.files("mtv") / "configs" / name)
    cfg = load_config(path)
    assert cfg.depth.normalisation == "median"  # both say why in a comment; a key renamed would fail to load
    if name == "ablation.yaml":
        assert cfg.eval.data, "mtv ablate needs the held-out shards"
        for design in designs().values():
            for _, switches in design:
                rung = rung_config(path, Path("r"), switches, [], seed=1)
                assert {k: getattr(rung, k).enabled for k in switches} == switches and rung.seed == 1
