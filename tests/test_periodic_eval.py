"""eval.every: probes on the model being trained, logged as eval/<metric>, without changing the run."""

import numpy as np
import pytest
import torch

from fixtures import SMALL_SSL, train_tree
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.eval.suite import run_suite
from mtv.export import export
from mtv.train import train
from mtv.train.logger import read_metrics



def tree(run_dir, world, val, **extra):
    return train_tree(run_dir, world, steps=4, ckpt_every=2, keep_ckpts=3, ssl=SMALL_SSL, **extra,
                      eval={"data": str(val), "every": 2, "during": "zeroshot,retrieval,corr_geo"})


def split(records):
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    return losses, evals


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, world, world_eval_splits):
    root = tmp_path_factory.mktemp("periodic")
    cfg = tree(root / "with", world, world_eval_splits[1])
    train(build_config(cfg), progress=False)
    return root, cfg


def test_every_k_steps_the_probes_are_logged_and_equal_mtv_eval_on_that_checkpoint(evaluated, world_eval_splits,
                                                                                    tmp_path):
    root, _ = evaluated
    losses, evals = split(read_metrics(root / "with"))
    assert [r["step"] for r in evals] == [2, 4]
    assert {"eval/zeroshot_top1", "eval/retrieval_i2t_r1", "eval/corr_geo_recall"} <= evals[-1].keys()
    # the same probes on the exported checkpoint of step 4, through the saved files and mtv eval's own loading
    model = export(root / "with" / "checkpoints" / "step_00000004.pt", tmp_path / "export")
    report = run_suite(model, world_eval_splits[1], tmp_path / "report", "zeroshot,retrieval,corr_geo",
                       progress=False, floor=False)
    for key, value in report["metrics"].items():
        assert evals[-1][f"eval/{key}"] == pytest.approx(value, abs=1e-6), key


def test_evaluation_changes_nothing_in_training_and_resume_stays_exact(evaluated, world, world_eval_splits):
    root, cfg = evaluated
    plain = {**cfg, "run_dir": str(root / "without"), "eval": {}}
    train(build_config(plain), progress=False)
    with_eval, evals = split(read_metrics(root / "with"))
    without, none = split(read_metrics(root / "without"))
    assert not none
    assert [{k: v for k, v in r.items() if k.startswith("loss")} for r in with_eval] == \
        [{k: v for k, v in r.items() if k.startswith("loss")} for r in without]  # bit for bit
    # and every random stream a plug-in objective might draw from is where it would be without evaluation
    states = [torch.load(root / run / "checkpoints" / "step_00000004.pt", weights_only=False)["rng"]
              for run in ("with", "without")]
    for a, b in zip(*states, strict=True):
        assert torch.equal(a["torch"], b["torch"]) and a["python"] == b["python"]
        assert all(np.array_equal(x, y) for x, y in zip(a["numpy"], b["numpy"], strict=True))
    resumed = {**cfg, "run_dir": str(root / "resumed")}
    train(build_config(resumed), progress=False)
    (root / "resumed" / "checkpoints" / "step_00000004.pt").unlink()  # resume from step 2
    train(build_config(resumed), resume=True, progress=False)
    again, evals_again = split(read_metrics(root / "resumed"))
    assert [r["loss"] for r in again] == [r["loss"] for r in with_eval]
    assert evals_again == evals


def test_eval_every_without_data_or_with_a_head_probe_is_one_line(tmp_path, world):
    with pytest.raises(MTVError, match="eval.every needs eval.data"):
        build_config(train_tree(tmp_path / "r", world, eval={"every": 2}))
    with pytest.raises(MTVError, match="eval.during: 'zeroshot,grounding' names a head probe"):
        train(build_config(train_tree(tmp_path / "r", world, steps=3, eval={"every": 1, "data": str(world),
                                                                           "during": "zeroshot,grounding"})),
              progress=False)
