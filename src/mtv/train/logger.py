"""Run logs: ``metrics.jsonl`` (one object per logged step) and TensorBoard scalars, on the main rank."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mtv.atomic import disk_error, write_text


class MetricsLog:
    def __init__(self, run_dir: str | os.PathLike, start_step: int, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        _truncate_after(self.path, start_step)  # a resumed run rewrites the steps it replays
        self.file = open(self.path, "a")
        self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise disk_error(self.path, e, "run_dir") from None
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, record["step"])

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard only: values of a step that has no metrics.jsonl record."""
        if self.enabled:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def _parsed(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def _truncate_after(path: Path, step: int) -> None:
    """Keeps the records up to ``step``; a line that does not parse (what a crash or a full disk leaves at the
    end) is dropped and said so. Rewritten under a temporary name, then renamed."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = [(line, _parsed(line)) for line in lines]
    broken = sum(r is None for _, r in records)
    if broken:
        print(f"{path}: dropped {broken} unreadable line{'s' if broken > 1 else ''} (a run cut off mid-write)")
    write_text(path, "".join(line + "\n" for line, r in records if r is not None and r["step"] <= step), "run_dir")


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
