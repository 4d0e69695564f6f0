"""Real (micro) training runs: outputs, schedule, skip accounting, kill-and-resume, two processes."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fixtures import train_tree, write_toy_shards
from mtv.config import build_config
from mtv.errors import MTVError
from mtv.train import train
from mtv.train.logger import read_metrics
from mtv.train.schedule import warmup_cosine

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    write_toy_shards(folder, n_shards=4, per_shard=24, corrupt={5: "image", 9: "caption"})
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    run_dir = tmp_path_factory.mktemp("run")
    summary = train(build_config(train_tree(run_dir, data)), progress=False)
    return run_dir, summary


def test_run_writes_logs_checkpoints_and_processor(run):
    run_dir, summary = run
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for r in records:
        assert {"loss", "loss_vl", "lr", "images_per_s", "samples_seen", "samples_skipped"} <= r.keys()
        assert r["images_per_s"] > 0
    # the learning rate each step trained with: warm-up + cosine at its 0-based index
    assert [r["lr"] for r in records] == pytest.approx([1e-3 * warmup_cosine(s, 2, 6) for s in range(6)])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_00000003.pt", "step_00000006.pt"]
    assert any(p.name.startswith("events.out.tfevents") for p in (run_dir / "tensorboard").iterdir())
    assert (run_dir / "processor" / "spiece.model").exists()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["preset"] == "micro"


def test_bad_samples_are_counted_not_lost(run):
    run_dir, summary = run
    assert summary["samples_skipped"] >= 1  # 6 steps x 8 = 48 of 96 samples: the defects at 5 and 9 may fall later
    assert summary["samples_skipped"] == sum(summary["skip_reasons"].values())
    assert set(summary["skip_reasons"]) <= {"bad_image", "empty_caption"}
    assert read_metrics(run_dir)[-1]["samples_skipped"] == summary["samples_skipped"]


def test_too_many_bad_samples_stop_the_run(tmp_path):
    data = tmp_path / "bad"
    write_toy_shards(data, n_shards=1, per_shard=20, corrupt={i: "image" for i in range(0, 20, 3)})
    tree = train_tree(tmp_path / "r", data, data__max_skip_fraction=0.1, data__min_samples_for_skip_check=10)
    with pytest.raises(MTVError, match=r"could not be used .*bad_image"):
        train(build_config(tree), progress=False)


def test_existing_run_needs_resume(run, data):
    run_dir, _ = run
    with pytest.raises(MTVError, match="--resume"):
        train(build_config(train_tree(run_dir, data)), progress=False)


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mtv.cli", *args], env=ENV, capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_killed_run_resumes_with_identical_losses(tmp_path, data):
    """SIGKILL a run after its first checkpoint; the resumed run's losses equal an uninterrupted run's."""
    tree = train_tree(tmp_path / "killed", data, steps=80, ckpt_every=4, keep_ckpts=50, data__workers=2)
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(tree))
    proc = subprocess.Popen([sys.executable, "-m", "mtv.cli", "train", "--config", str(tmp_path / "k.yaml")],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoints" / "step_00000004.pt"
    while not first.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpts = sorted((tmp_path / "killed" / "checkpoints").glob("step_*.pt"))
    assert ckpts and ckpts[-1].name != "step_00000080.pt", "the run finished before it could be killed"
    done = cli("train", "--config", str(tmp_path / "k.yaml"), "--resume")
    assert done.returncode == 0, done.stderr

    tree = train_tree(tmp_path / "whole", data, steps=80, ckpt_every=40, data__workers=2)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(tree))
    assert cli("train", "--config", str(tmp_path / "w.yaml")).returncode == 0
    resumed, whole = read_metrics(tmp_path / "killed"), read_metrics(tmp_path / "whole")
    assert [r["step"] for r in resumed] == list(range(1, 81))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-6, abs=1e-7)
    assert [r["samples_seen"] for r in resumed] == [r["samples_seen"] for r in whole]


@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path, data):
    tree = train_tree(tmp_path / "ddp", data, steps=4, ckpt_every=4)
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(tree))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "mtv.cli", "train", "--config", str(tmp_path / "d.yaml")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    records = read_metrics(tmp_path / "ddp")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["samples_seen"] == 4 * 8 * 2 + records[-1]["samples_skipped"]
    import torch

    state = torch.load(tmp_path / "ddp" / "checkpoints" / "step_00000004.pt", weights_only=False)
    assert len(state["data"]) == 2 and len(state["rng"]) == 2


@pytest.mark.parametrize("args, words", [
    (["train", "--config", "/nonexistent/c.yaml"], "config file not found"),
    (["export", "--ckpt", "/nonexistent/run", "--out", "/tmp/x"], "checkpoint not found"),
    (["eval", "--model", "/tmp", "--data", "{data}", "--out", "/tmp/x"], "not a model directory"),
    (["eval", "--model", "/tmp", "--data", "/nonexistent", "--out", "/tmp/x"], "no such shard file"),
])
def test_cli_errors_are_one_line(args, words, data):
    out = cli(*[a.format(data=data) for a in args])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in out.stderr


def test_gradient_accumulation_takes_micro_batches_per_step(tmp_path, data):
    tree = train_tree(tmp_path / "acc", data, steps=3, optim={"warmup_steps": 1, "accum_steps": 2})
    summary = train(build_config(tree), progress=False)
    records = read_metrics(tmp_path / "acc")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert summary["samples_seen"] == 3 * 2 * 8 + summary["samples_skipped"]


def test_resuming_with_other_model_settings_is_refused(run, data):
    run_dir, _ = run
    tree = train_tree(run_dir, data, ssl={"n_local": 2})
    with pytest.raises(MTVError, match=r"was trained with ssl.n_local=6, the config now says 2"):
        train(build_config(tree), resume=True, progress=False)


def test_the_settings_of_an_objective_off_then_and_now_do_not_block_a_resume(tmp_path, data):
    tree = train_tree(tmp_path / "nossl", data, steps=2, ckpt_every=2, optim={"warmup_steps": 1},
                      ssl={"enabled": False})
    train(build_config(tree), progress=False)
    tree["ssl"] = {"enabled": False, "n_local": 2, "teacher_temp_start": 0.01}  # builds nothing either way
    assert train(build_config(tree), resume=True, progress=False)["steps_this_run"] == 0
    tree["ssl"]["enabled"] = True
    with pytest.raises(MTVError, match=r"was trained with ssl.enabled=False, the config now says True"):
        train(build_config(tree), resume=True, progress=False)


def test_resume_survives_a_truncated_metrics_line_and_a_truncated_newest_checkpoint(tmp_path, data, capsys):
    tree = train_tree(tmp_path / "cut", data, steps=6, ckpt_every=2, keep_ckpts=3)
    train(build_config({**tree, "steps": 4}), progress=False)
    run = tmp_path / "cut"
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 1.2')  # a crash mid-write
    newest = run / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a full disk mid-save
    capsys.readouterr()
    train(build_config(tree), resume=True, progress=False)
    out = capsys.readouterr().out
    assert "resuming from step_00000002.pt" in out and "step_00000004.pt" in out
    assert "dropped 1 unreadable line" in out
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]  # steps 3-4 redone from step 2


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path, data):
    tree = train_tree(tmp_path / "dead", data, steps=4, ckpt_every=2)
    train(build_config(tree), progress=False)
    for ckpt in (tmp_path / "dead" / "checkpoints").iterdir():
        ckpt.write_bytes(b"junk")
    with pytest.raises(MTVError, match="no checkpoint is readable .*start a new run_dir"):
        train(build_config(tree), resume=True, progress=False)


def test_shards_where_no_image_decodes_stop_with_the_reason_instead_of_hanging(tmp_path):
    data = tmp_path / "allbad"
    write_toy_shards(data, n_shards=1, per_shard=12, corrupt={i: "image" for i in range(12)})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(train_tree(tmp_path / "r", data)))
    result = cli("train", "--config", str(config), timeout=300)  # it used to spin at step 0 forever
    assert result.returncode == 2
    assert "gave 0 usable samples, fewer than one batch of 8" in result.stderr and "'bad_image': 12" in result.stderr


def test_a_run_directory_has_one_owner_at_a_time(tmp_path, data, capsys):
    import json
    import socket

    run = tmp_path / "owned"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    with pytest.raises(MTVError, match=f"in use by PID {os.getpid()} on {socket.gethostname()}"):
        train(build_config(train_tree(run, data, steps=3)), progress=False)
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()  # nothing touched
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    train(build_config(train_tree(run, data, steps=3)), progress=False)  # a killed run's lock is taken over
    assert f"taking over the lock of PID {int(dead.stdout)}" in capsys.readouterr().out
    assert not (run / ".lock").exists()  # released at the end


def test_resume_with_a_new_learning_rate_trains_with_it(tmp_path, data, capsys):
    tree = train_tree(tmp_path / "lr", data, steps=4, ckpt_every=2, keep_ckpts=3)
    train(build_config(tree), progress=False)
    (tmp_path / "lr" / "checkpoints" / "step_00000004.pt").unlink()  # resume from step 2
    tree["optim"] |= {"lr": 5e-4, "weight_decay": 0.05}
    train(build_config(tree), resume=True, progress=False)
    assert "optim lr 0.001 -> 0.0005, weight_decay 0.0001 -> 0.05 from the config" in capsys.readouterr().out
    lrs = [r["lr"] for r in read_metrics(tmp_path / "lr")]
    assert lrs[:2] == pytest.approx([1e-3 * warmup_cosine(s, 2, 4) for s in (0, 1)])
    assert lrs[2:] == pytest.approx([5e-4 * warmup_cosine(s, 2, 4) for s in (2, 3)])
    assert [r["weight_decay"] for r in read_metrics(tmp_path / "lr")] == [1e-4, 1e-4, 0.05, 0.05]
    assert yaml.safe_load((tmp_path / "lr" / "config.yaml").read_text())["optim"]["lr"] == 5e-4


def test_training_an_objective_on_shards_without_its_labels_says_so_and_stops(tmp_path, data, capsys):
    tree = train_tree(tmp_path / "nodepth", data, steps=4, depth__enabled=True, data__min_samples_for_skip_check=8,
                      data__max_missing_label_fraction=0.5)
    with pytest.raises(MTVError, match=r"samples have no depth labels \(100.0% > data.max_missing_label_fraction"
                                       r"=0.5\); label them with mtv label or set depth.enabled=false"):
        train(build_config(tree), progress=False)
    tree = train_tree(tmp_path / "tolerated", data, steps=4, depth__enabled=True,
                      data__max_missing_label_fraction=1.0)
    summary = train(build_config(tree), progress=False)
    assert "samples have no depth labels (depth learns from the rest)" in capsys.readouterr().out
    assert summary["labels_missing"]["depth"] == summary["samples_seen"] - summary["samples_skipped"]


INTERRUPT_AT = """
import os, signal, sys
from mtv import cli
from mtv.train.logger import MetricsLog

log = MetricsLog.log
def log_then_interrupt(self, record):  # Ctrl-C right after step N is logged
    log(self, record)
    if record["step"] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGINT)
MetricsLog.log = log_then_interrupt
sys.exit(cli.main(["train", "--config", sys.argv[2]]))
"""


def test_sigint_saves_the_step_prints_the_resume_command_and_resumes_exactly(tmp_path, data):
    tree = train_tree(tmp_path / "stopped", data, steps=8, ckpt_every=100)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tree))
    out = subprocess.run([sys.executable, "-c", INTERRUPT_AT, "5", str(tmp_path / "s.yaml")], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 130, out.stderr[-2000:]
    saved = tmp_path / "stopped" / "checkpoints" / "step_00000005.pt"
    resume = f"mtv train --config {tmp_path / 'stopped' / 'config.yaml'} --resume"
    assert saved.exists() and out.stderr.strip().splitlines()[-1] == (
        f"mtv train: interrupted at step 5; saved {saved}; resume with: {resume}")
    assert cli(*resume.split()[1:]).returncode == 0
    train(build_config(train_tree(tmp_path / "whole", data, steps=8, ckpt_every=100)), progress=False)
    resumed, whole = read_metrics(tmp_path / "stopped"), read_metrics(tmp_path / "whole")
    assert [r["step"] for r in resumed] == list(range(1, 9))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("where, code, words", [("checkpoint", errno.ENOSPC, "no space left on device"),
                                                ("metrics", errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_naming_the_file(tmp_path, data, monkeypatch, where, code, words):
    import torch

    from mtv.train.logger import MetricsLog

    if where == "checkpoint":
        def failing_save(state, f):
            f.write(b"PK half a checkpoint")
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(torch, "save", failing_save)
        name = "step_00000003.pt"
    else:
        class Refusing:  # the log file as a disk that went read-only after it was opened
            def write(self, text):
                raise OSError(code, os.strerror(code))

            flush = close = lambda self: None

        opened = MetricsLog.__init__
        def open_then_refuse(self, *args, **kw):
            opened(self, *args, **kw)
            self.file.close()
            self.file = Refusing()
        monkeypatch.setattr(MetricsLog, "__init__", open_then_refuse)
        name = "metrics.jsonl"
    with pytest.raises(MTVError) as err:
        train(build_config(train_tree(tmp_path / "r", data)), progress=False)
    message = str(err.value)
    assert words in message and name in message and "\n" not in message
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_data_train_that_is_not_a_tar_names_the_key_and_the_file(tmp_path):
    (tmp_path / "captions.csv").write_text("url,caption\n")
    with pytest.raises(MTVError, match=r"^data.train: .*captions.csv is not a tar shard"):
        train(build_config(train_tree(tmp_path / "r", tmp_path / "captions.csv")), progress=False)


def test_a_second_ctrl_c_interrupts_at_once_and_the_handler_is_restored():
    import torch

    from mtv.train.interrupt import StopRequest

    # Python's own handler, whatever this process inherited: a shell starts background jobs with SIGINT ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopRequest() as stop:
            assert not stop.now(1, torch.device("cpu"))
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert stop.now(1, torch.device("cpu"))  # the first only asks the loop to stop after its step
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
