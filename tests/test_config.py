import pytest

from mtv.config import build_config, describe, load_config, parse_overrides
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
