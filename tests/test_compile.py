"""`compile: true`: the same training step through torch.compile gives the eager losses; a backend that cannot
run is a one-line error naming the key."""

import pytest

from fixtures import train_tree
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.train import train
from mtv.train.logger import read_metrics
from mtv.world import generate_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, 24, seed=5, size=32, shard_size=12, progress=False)
    return out


@pytest.mark.slow
def test_compiled_four_objective_step_gives_the_eager_losses(tmp_path, world):
    """aot_eager traces the step with dynamo and AOT autograd (the graphs inductor would generate code for) and
    runs them: on CPU it keeps this test in seconds where inductor's C++ build takes minutes."""
    tree = dict(steps=4, optim={"warmup_steps": 1}, ssl={"n_local": 2, "prototypes": 64, "head_hidden": 32})
    train(build_config(train_tree(tmp_path / "eager", world, **tree)), progress=False)
    train(build_config(train_tree(tmp_path / "compiled", world, compile=True, compile_backend="aot_eager", **tree)),
          progress=False)
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    every = {"loss_vl", "loss_dino", "loss_ibot", "loss_koleo", "loss_grounding", "loss_box", "loss_depth"}
    assert every <= set(eager[0])
    for key in [k for k in eager[0] if k.startswith("loss")] + ["grad_norm", "logit_scale"]:
        assert [r[key] for r in compiled] == pytest.approx([r[key] for r in eager], rel=1e-4, abs=1e-6), key


def test_a_compile_backend_that_cannot_run_is_a_one_line_error(tmp_path, world):
    tree = train_tree(tmp_path / "run", world, steps=2, optim={"warmup_steps": 1}, compile=True,
                      compile_backend="no-such-backend")
    with pytest.raises(MTVError, match=r"^compile: torch.compile with backend 'no-such-backend' cannot run here "
                                       r"\(.*\); set compile: false or another compile_backend$"):
        train(build_config(tree), progress=False)
