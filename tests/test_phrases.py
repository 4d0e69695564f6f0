"""Detection queries from captions: the rule-based chunker, deduplication, caps and extra vocabulary."""

import pytest

from mtv.errors import MTVError
from mtv.experts.phrases import PhraseConfig, noun_phrases


@pytest.mark.parametrize("caption, phrases", [
    ("a small red cube left of a blue sphere", ["small red cube", "blue sphere"]),  # MTV World templates
    ("A large green cylinder in front of a small yellow cone", ["large green cylinder", "small yellow cone"]),
    ("A man riding a horse on the beach.", ["man", "horse", "beach"]),  # -ing verb after a noun
    ("two dogs playing with a frisbee in the park", ["dogs", "frisbee", "park"]),
    ("a tall building next to a running river", ["tall building", "running river"]),  # -ing noun, -ing adjective
    ("A kitchen with a stove, a sink and a dining table", ["kitchen", "stove", "sink", "dining table"]),
    ("a cat sits on a wooden chair near the window", ["cat", "wooden chair", "window"]),
    ("Stock Photo - Beautiful woman with red hair | 1920x1080", ["beautiful woman", "red hair"]),  # alt-text noise
    ("a close-up photo of the man's hat", ["man", "hat"]),  # picture words and possessives
    ("the sky is blue", ["sky"]),  # a lone adjective is no phrase
    ("Looking at the sea", ["sea"]),
    ("", []),
    ("!!! 2024 ???", []),
])
def test_noun_phrases(caption, phrases):
    assert noun_phrases(caption) == phrases


def test_long_phrases_keep_their_head():
    assert noun_phrases("a big old rusty red iron garden gate", max_words=3) == ["iron garden gate"]


def test_queries_are_deduplicated_and_capped_then_vocabulary_added():
    cfg = PhraseConfig(max_phrases=2, vocabulary=("dog", "tree"))
    assert cfg.queries("a dog and a dog and a cat and a bird") == ["dog", "cat", "tree"]
    assert PhraseConfig(max_phrases=0).queries("a dog") == []


def test_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("Person\n\n# animals\ndog  # pets\nperson\n")
    cfg = PhraseConfig.with_vocabulary_file(path, max_phrases=1)
    assert cfg.vocabulary == ("person", "dog")
    prov = cfg.provenance()
    assert prov["vocabulary"]["phrases"] == 2 and len(prov["vocabulary"]["sha256_16"]) == 16
    assert prov["max_phrases"] == 1 and PhraseConfig().provenance()["vocabulary"] is None


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(MTVError, match="cannot read"):
        PhraseConfig.with_vocabulary_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(MTVError, match="no phrases"):
        PhraseConfig.with_vocabulary_file(tmp_path / "empty.txt")
    with pytest.raises(MTVError, match="max-words"):
        PhraseConfig(max_words=0)
