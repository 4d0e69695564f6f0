"""The training stream: every sample once per epoch across ranks and workers, exact resume, counted skips."""

import pytest
import torch

from fixtures import write_toy_shards
from mtv.data.schema import decode_caption, decode_image
from mtv.data.shards import ReadStats, list_shards, read_samples
from mtv.data.stream import Batches, Example, ShardStream, StreamState
from mtv.errors import MTVError


def key_decoder(raw, rng):
    """Decodes like training does (so defects are found) but returns the sample's key as a tensor."""
    decode_image(raw)
    decode_caption(raw)
    return Example({"key": torch.tensor(int(raw["__key__"]))})


def take(batches, n):
    return [next(batches)["key"].tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_toy_shards(tmp_path_factory.mktemp("toy"), n_shards=4, per_shard=12)


@pytest.mark.parametrize("world, workers", [(1, 0), (1, 2), (2, 2)])
def test_one_epoch_reads_every_sample_once(shards, world, workers):
    seen = []
    for rank in range(world):
        ds = ShardStream(shards, key_decoder, batch_size=4, seed=3, rank=rank, world_size=world, shuffle_buffer=8)
        per_rank = 48 // world // 4
        seen += [k for b in take(Batches(ds, workers), per_rank) for k in b]
    assert sorted(seen) == list(range(48))


def test_shuffle_depends_on_seed(shards):
    a = take(Batches(ShardStream(shards, key_decoder, 4, seed=0), 0), 3)
    b = take(Batches(ShardStream(shards, key_decoder, 4, seed=1), 0), 3)
    assert a != b and a == take(Batches(ShardStream(shards, key_decoder, 4, seed=0), 0), 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_the_same_sequence(shards, workers):
    """Stop after k batches (mid-epoch, with the worker rotation mid-cycle), rebuild from the saved state."""
    full = take(Batches(ShardStream(shards, key_decoder, 5, seed=7, shuffle_buffer=6), workers), 14)
    first = Batches(ShardStream(shards, key_decoder, 5, seed=7, shuffle_buffer=6), workers)
    head = take(first, 5)
    saved = StreamState.from_dict(first.state.to_dict())
    tail = take(Batches(ShardStream(shards, key_decoder, 5, seed=7, shuffle_buffer=6, state=saved), workers), 9)
    assert head + tail == full


def test_defects_are_skipped_and_counted(tmp_path):
    paths = write_toy_shards(tmp_path / "d", n_shards=2, per_shard=10, corrupt={3: "image", 12: "caption"})
    with open(paths[1], "r+b") as f:  # cut the second shard mid-member
        f.truncate(7000)
    paths.append(str(tmp_path / "missing.tar"))
    batches = Batches(ShardStream(paths, key_decoder, 2, seed=0), 0)
    keys = [k for b in take(batches, 6) for k in b]
    counts = batches.state.counts
    assert 3 not in keys and counts["skipped/bad_image"] >= 1
    assert counts["skipped/missing_shard"] >= 1 and counts["bad_shards"] >= 2
    assert counts["skipped"] == sum(v for k, v in counts.items() if k.startswith("skipped/"))
    assert counts["seen"] >= len(keys) + counts["skipped/bad_image"]


def test_raw_reader_counts_what_it_reads(shards):
    stats = ReadStats()
    assert len(list(read_samples(shards, stats))) == 48 == stats["samples"]


def test_all_shards_unreadable_is_an_error(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(MTVError, match="read no samples"):
        next(Batches(ShardStream([str(bad)], key_decoder, 2, seed=0), 0))


def test_too_few_shards_for_readers(shards):
    with pytest.raises(MTVError, match="4 shards for 8 readers"):
        Batches(ShardStream(shards, key_decoder, 2, seed=0, rank=0, world_size=2), 4)


def test_list_shards_forms(shards, tmp_path):
    folder = str(shards[0]).rsplit("/", 1)[0]
    assert list_shards(folder) == shards
    assert list_shards(folder + "/shard-00000{0..1}.tar") == shards[:2]
    assert list_shards(folder + "/*.tar") == shards
    with pytest.raises(MTVError, match="no such shard"):
        list_shards(tmp_path / "absent.tar")
    with pytest.raises(MTVError, match="no .tar shards"):
        list_shards(tmp_path)
