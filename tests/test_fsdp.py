"""`parallel: fsdp` (FSDP2 on gloo, 2 processes) against one process and DDP, its sharded checkpoints (exact
resume after SIGKILL, export), activation checkpointing, and the one-line error without torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import SiglipModel

from fixtures import SMALL_SSL, train_tree
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.export import export
from mtv.train import train
from mtv.train.logger import read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def checked(tmp_path_factory, world):
    """tests/dist_fsdp_check.py's results (see its docstring) and output folder."""
    from mtv.data.shards import list_shards
    from mtv.models.tokenizer import build_processor, train_tokenizer
    from mtv.train.loop import _captions

    tmp = tmp_path_factory.mktemp("fsdp_check")
    tok = train_tokenizer(_captions(list_shards(str(world)), 1000), str(tmp / "processor"), 200, 64)
    build_processor(tok, 32).save_pretrained(tmp / "processor")
    script = Path(__file__).with_name("dist_fsdp_check.py")
    out = subprocess.run([*TORCHRUN, str(script), str(world), str(tmp / "processor"), str(tmp / "out")],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads((tmp / "out" / "result.json").read_text()), tmp / "out"


def assert_same_losses(got: list[dict], want: list[dict], rel: float, first_rel: float = 1e-6) -> None:
    """Step 1 (no update yet: only the forward's summation order differs) to ``first_rel``, later steps to ``rel``."""
    assert len(got) == len(want) == 3
    for step, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys()
        for key in w:
            assert g[key] == pytest.approx(w[key], rel=first_rel if step == 0 else rel), f"step {step + 1}: {key}"


@pytest.mark.slow
def test_fsdp_losses_equal_one_process_on_the_global_batch(checked):
    """Two FSDP ranks of 4 images against one process on the 8, for 3 AdamW steps, in fp32. They differ only in
    summation order (each rank's partial sums, the reduce-scatter of gradients): about 1e-7 relative before the
    first update. AdamW divides each coordinate's step by that coordinate's own gradient size, so rounding in
    near-zero gradients moves parameters by a fraction of the lr (1e-3); measured on this data: parameters
    1.7e-5 apart after 3 steps, the largest loss difference 4.2e-6 relative (depth, step 3), 1e-7 at step 1.
    5e-5 (1e-6 at step 1) leaves room for that and is far below what a wrong reduction (a term doubled, a
    gradient summed instead of averaged) moves: order 1e-1 from step 1 on."""
    result, _ = checked
    runs = result["decomposable"]
    assert {"loss_vl", "loss_dino", "loss_ibot", "loss_depth"} <= runs["single"][0].keys()
    assert_same_losses(runs["fsdp"], runs["single"], rel=5e-5)
    assert runs["fsdp_max_param_diff"] < 1e-3


@pytest.mark.slow
def test_fsdp_with_and_without_activation_checkpointing_equals_ddp_on_all_four_objectives(checked):
    """Same per-rank batches, so only the reduction differs (all-reduce vs reduce-scatter): same tolerances
    (measured: 2e-7 relative in the losses, parameters 4.4e-6 apart)."""
    result, _ = checked
    runs = result["all_four"]
    every = {"loss_vl", "loss_dino", "loss_ibot", "loss_koleo", "loss_grounding", "loss_box", "loss_depth"}
    assert every <= runs["ddp"][0].keys()
    for name in ("fsdp_all", "fsdp_ac"):
        assert_same_losses(runs[name], runs["ddp"], rel=5e-5)
        assert runs[f"{name}_max_param_diff"] < 1e-3


@pytest.mark.slow
def test_export_of_a_sharded_checkpoint_loads_in_siglip_and_equals_the_plain_export(checked, tmp_path):
    """The sharded checkpoint, assembled in one process by `mtv export`, against the same weights gathered whole
    by torch's full state dict inside the FSDP run: equal bit for bit, model and heads; against the single
    process that trained on the global batches: equal to the parameter tolerance above."""
    _, out = checked
    exports = {name: export(out / name, tmp_path / name) for name in ("sharded", "gathered", "single")}
    models = {name: SiglipModel.from_pretrained(path).state_dict() for name, path in exports.items()}
    assert models["sharded"].keys() == models["gathered"].keys()
    for key, value in models["gathered"].items():
        assert torch.equal(models["sharded"][key], value), key
        torch.testing.assert_close(models["sharded"][key], models["single"][key], rtol=0, atol=1e-3)
    heads = {name: load_file(path / "heads.safetensors") for name, path in exports.items()}
    assert heads["sharded"].keys() == heads["gathered"].keys() and heads["sharded"]
    assert all(torch.equal(heads["sharded"][k], v) for k, v in heads["gathered"].items())


def torchrun_train(config: Path, *extra: str, **kw):
    return subprocess.Popen([*TORCHRUN, "-m", "mtv.cli", "train", "--config", str(config), *extra], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw)


def kill_ranks(proc: subprocess.Popen, seconds: float = 120) -> None:
    """SIGKILL every rank torchrun started (each runs in a session of its own); torchrun reaps them, so rank 0's run
    lock is free once it has exited."""
    ranks = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert ranks, "torchrun has no ranks running"
    for pid in ranks:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=seconds)


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_with_identical_losses(tmp_path, world):
    """SIGKILL both ranks after the first sharded checkpoint; the resumed run's losses equal an
    uninterrupted FSDP run's, so do the probes eval.every runs on the gathered weights, and a plain (DDP) resume
    of its checkpoints is refused in one line."""
    tree = train_tree(tmp_path / "killed", world, steps=40, ckpt_every=4, keep_ckpts=20, parallel="fsdp",
                      ssl=SMALL_SSL, precision="fp32",
                      eval={"data": str(world), "every": 20, "max_samples": 12, "during": "zeroshot,retrieval"})
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(tree))
    proc = torchrun_train(tmp_path / "k.yaml")
    first = tmp_path / "killed" / "checkpoints" / "step_00000004"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.05)
    kill_ranks(proc)
    ckpts = sorted((tmp_path / "killed" / "checkpoints").glob("step_*"))
    assert ckpts and ckpts[-1].name != "step_00000040", "the run finished before it could be killed"
    assert all((c / ".metadata").is_file() and (c / "train_state.pt").is_file() for c in ckpts)
    resumed = torchrun_train(tmp_path / "k.yaml", "--resume")
    whole_tree = {**tree, "run_dir": str(tmp_path / "whole"), "ckpt_every": 40}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(whole_tree))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    uninterrupted = torchrun_train(tmp_path / "w.yaml")
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.stderr.read()[-3000:]

    after, whole = read_metrics(tmp_path / "killed"), read_metrics(tmp_path / "whole")
    evals = [[r for r in records if "eval/zeroshot_top1" in r] for records in (after, whole)]
    assert [r["step"] for r in evals[0]] == [20, 40]
    for resumed_eval, whole_eval in zip(*evals, strict=True):
        assert resumed_eval == pytest.approx(whole_eval, rel=1e-5)
    after, whole = ([r for r in records if "loss" in r] for records in (after, whole))
    assert [r["step"] for r in after] == list(range(1, 41))
    assert [r["loss"] for r in after] == pytest.approx([r["loss"] for r in whole], rel=1e-6, abs=1e-7)
    assert [r["samples_seen"] for r in after] == [r["samples_seen"] for r in whole]
    with pytest.raises(MTVError, match=r"checkpoints are sharded \(parallel=fsdp\), the config now says "
                                       r"parallel=ddp; resume with parallel=fsdp$"):
        train(build_config({**tree, "parallel": "ddp", "steps": 41}), resume=True, progress=False)


def test_fsdp_without_torchrun_is_a_one_line_error_naming_the_key(tmp_path, world, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    tree = train_tree(tmp_path / "run", world, parallel="fsdp")
    with pytest.raises(MTVError, match=r"^parallel: fsdp needs the processes torchrun starts \(WORLD_SIZE is "
                                       r"unset\); launch with `torchrun --nproc_per_node N -m mtv.cli train \.\.\.` "
                                       r"or set parallel: ddp$"):
        train(build_config(tree), progress=False)


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_losses_gradients_and_checkpoints(tmp_path, world):
    """One process, all four objectives, 3 steps: recomputing each block in backward changes no loss term and no
    gradient norm (fp32, same operations: equal to rounding), and the checkpoint's tensor names stay plain."""
    tree = dict(steps=3, ckpt_every=3, optim={"warmup_steps": 1}, ssl=SMALL_SSL, precision="fp32")
    train(build_config(train_tree(tmp_path / "plain", world, **tree)), progress=False)
    train(build_config(train_tree(tmp_path / "ac", world, activation_checkpointing=True, **tree)), progress=False)
    plain, ac = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "ac")
    for p, a in zip(plain, ac, strict=True):
        for key in [k for k in p if k.startswith("loss")] + ["grad_norm"]:
            assert a[key] == pytest.approx(p[key], rel=1e-6), (p["step"], key)
    states = [torch.load(tmp_path / run / "checkpoints" / "step_00000003.pt", weights_only=False)
              for run in ("plain", "ac")]
    assert states[0]["model"].keys() == states[1]["model"].keys()
    assert not any("_checkpoint_wrapped_module" in k for k in states[1]["model"])
