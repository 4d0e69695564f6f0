"""The training stream: shards split across ranks and workers, shuffled, decoded, batched — and resumable.

Each (rank, worker) pair reads its own *stream* of shards. A stream's order is a pure function of
(seed, stream, epoch), so its position is just ``(epoch, samples consumed in that epoch)``. A resumed run re-reads
(without decoding) the part of the current epoch already consumed and skips it; earlier epochs are not re-read.

DataLoader hands out batches round-robin over workers. After ``k`` batches the next one comes from worker
``k % W``, so a resumed loader rotates the worker→stream map by ``k`` and continues the same interleaving.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mtv.data.shards import ReadStats, iter_shard
from mtv.data.workers import init_worker
from mtv.errors import MTVError, SkipSample

@dataclass
class Example:
    """One decoded sample: its tensors (and lists) by name, and the labels an enabled objective needs but it lacks."""

    fields: dict
    missing: tuple[str, ...] = ()


@dataclass
class _Collated:
    """A batch as a worker hands it over, with where its stream stands and what reading it met."""

    fields: dict
    position: tuple[int, int, int]  # stream, epoch, samples consumed
    counts: dict


@dataclass
class _StreamFailure:
    message: str


Decoder = Callable[[dict, np.random.Generator], Example]


@dataclass
class StreamState:
    """Where a rank stands: each stream's (epoch, consumed), batches taken, and what was read and skipped."""

    positions: dict[int, tuple[int, int]]
    batches: int = 0
    counts: Counter | None = None

    def to_dict(self) -> dict:
        return {"positions": {str(k): list(v) for k, v in self.positions.items()},
                "batches": self.batches, "counts": dict(self.counts or {})}

    @classmethod
    def from_dict(cls, d: dict | None) -> "StreamState":
        d = d or {}
        return cls({int(k): tuple(v) for k, v in d.get("positions", {}).items()},
                   d.get("batches", 0), Counter(d.get("counts", {})))


class ShardStream(IterableDataset):
    def __init__(self, shards: list[str], decode: Decoder, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 1000, state: StreamState | None = None):
        self.shards, self.decode, self.batch_size = list(shards), decode, batch_size
        self.seed, self.rank, self.world_size, self.buffer = seed, rank, world_size, shuffle_buffer
        self.state = state or StreamState({})

    def check_split(self, workers: int) -> None:
        """Fewer shards than readers would leave some readers idle forever (a classic webdataset hang)."""
        readers = self.world_size * max(workers, 1)
        if len(self.shards) < readers:
            raise MTVError(f"{len(self.shards)} shards for {readers} readers (ranks x data.workers): write more, "
                           f"smaller shards (mtv world --shard-size) or lower data.workers")

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        local = (wid + self.state.batches) % nw
        stream = self.rank * nw + local
        epoch, start = self.state.positions.get(stream, (0, 0))
        while True:
            yield from self._epoch(stream, self.world_size * nw, epoch, start)
            epoch, start = epoch + 1, 0

    def _epoch(self, stream: int, n_streams: int, epoch: int, start: int) -> Iterator[dict]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        mine = [self.shards[i] for i in order[stream::n_streams]]
        rng = np.random.default_rng([self.seed, stream, epoch])
        stats, epoch_skips = ReadStats(), Counter()
        consumed, batch, read_any, yielded = 0, [], False, False
        for raw in _shuffled((s for p in mine for s in iter_shard(p, stats)), self.buffer, rng):
            read_any = True
            consumed += 1
            if consumed <= start:
                continue
            stats["seen"] += 1
            try:
                example = self.decode(raw, np.random.default_rng([self.seed, stream, epoch, consumed]))
            except SkipSample as why:
                stats.skip(str(why))
                epoch_skips[str(why)] += 1
            else:
                for label in example.missing:
                    stats[f"missing/{label}"] += 1
                batch.append(example.fields)
            if len(batch) == self.batch_size:
                yield self._collate(batch, stream, epoch, consumed, stats)
                batch, stats, yielded = [], ReadStats(), True
        if not read_any and start == 0:
            yield _StreamFailure(f"stream {stream} read no samples from its shards {mine}: "
                                 f"they are all missing or corrupt ({dict(stats)})")
        elif not yielded and start == 0:  # every later epoch would be the same: stop instead of spinning forever
            yield _StreamFailure(f"stream {stream}: a whole pass over its shards {mine} gave {len(batch)} usable "
                                 f"samples, fewer than one batch of {self.batch_size} (skipped: "
                                 f"{dict(epoch_skips)}); check the shards or lower batch_size")

    @staticmethod
    def _collate(batch: list[dict], stream: int, epoch: int, consumed: int, stats: ReadStats) -> _Collated:
        out = {k: torch.stack([b[k] for b in batch]) if isinstance(batch[0][k], torch.Tensor) else [b[k] for b in batch]
               for k in batch[0]}
        # "seen" excludes resume replay
        return _Collated(out, (stream, epoch, consumed), {k: v for k, v in stats.items() if k != "samples"})


def _shuffled(items: Iterator[dict], size: int, rng: np.random.Generator) -> Iterator[dict]:
    """Reservoir-style shuffle buffer; drained at the end so an epoch yields every sample once."""
    buf: list[dict] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


class Batches:
    """Iterates a ShardStream through a DataLoader, keeping the rank's StreamState up to date."""

    def __init__(self, dataset: ShardStream, workers: int):
        dataset.check_split(workers)
        self.dataset, self.state = dataset, dataset.state
        self.state.counts = self.state.counts or Counter()
        self.loader = DataLoader(dataset, batch_size=None, num_workers=workers,
                                 persistent_workers=False, prefetch_factor=4 if workers else None,
                                 worker_init_fn=init_worker)
        self._it = iter(self.loader)

    def __next__(self) -> dict:
        """The next collated batch: field name -> stacked tensor (or list of the samples' values)."""
        batch = next(self._it)
        if isinstance(batch, _StreamFailure):
            raise MTVError(batch.message)
        stream, epoch, consumed = batch.position
        self.state.positions[int(stream)] = (int(epoch), int(consumed))
        self.state.counts.update(batch.counts)
        self.state.batches += 1
        return batch.fields

    def __iter__(self):
        return self
