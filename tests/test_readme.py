"""The README's pipeline section, run top to bottom as written, at small sizes. The commands are read from
README.md itself, so the README and this test cannot drift apart: a new line there must run here, or be listed
in NOT_RUN with the reason."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtv.cli import main

REPO = Path(__file__).resolve().parents[1]

# Lines that need what a test machine has not got, each with the reason (matched by their start).
NOT_RUN = {
    "mtv label --in data/laion/": "real expert weights and a photo corpus",
    "torchrun --nproc_per_node 8": "8 processes",
    "mtv train --config my.yaml": "my.yaml is the reader's own config",
    "mtv ablate --config my.yaml": "my.yaml is the reader's own config; mtv ablate has its own test",
}
# Small sizes: option -> value, config overrides added to every `mtv train`, probe epochs for `mtv eval`.
SMALL = {"--n": {"data/world": "32", "data/world-val": "16"}, "--workers": "1"}
SMALL_TRAIN = ["steps=2", "optim.warmup_steps=1", "batch_size=8", "log_every=1", "ckpt_every=2", "data.shuffle_buffer=16", "threads=1"]
SMALL_EVAL = ["--epochs", "1"]


def pipeline_commands() -> list[str]:
    """Every command line of the bash block(s) of README.md's "## The pipeline" section."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## The pipeline\n(.*?)^## ", text, re.S | re.M).group(1)
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert blocks, "README.md's pipeline section has no bash block"
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def small(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in SMALL:
            rule = SMALL[arg]
            out[i + 1] = rule if isinstance(rule, str) else rule[out[out.index("--out") + 1]]
    out += {"train": SMALL_TRAIN, "eval": SMALL_EVAL}.get(out[1], [])
    return out


def test_the_parser_finds_every_readme_line():
    lines = pipeline_commands()
    assert lines[0].startswith("mtv world") and any(line.startswith("mtv predict") for line in lines)
    stale = [start for start in NOT_RUN if not any(line.startswith(start) for line in lines)]
    assert not stale, f"NOT_RUN names lines the README no longer has: {stale}"


@pytest.mark.slow  # about 40 s on the 2-core machine; in the default run (-m "not slow" leaves it out)
def test_the_readme_pipeline_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").symlink_to(REPO / "src")  # the README's paths are relative to a clone's root
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save("photo.jpg")
    ran = []
    for line in pipeline_commands():
        if any(line.startswith(start) for start in NOT_RUN):
            continue
        argv = small(shlex.split(line, comments=True))
        assert argv[0] == "mtv", f"README line is not an mtv command: {line}"
        assert main(argv[1:]) == 0, f"README line failed: {line}"
        ran.append(argv[1])
    assert ran == ["world", "world", "label", "train", "export", "eval", "predict"]
    assert (tmp_path / "runs/exp1/eval/report.md").exists() and (tmp_path / "pred/boxes.png").exists()
