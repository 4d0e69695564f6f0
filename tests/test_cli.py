"""What a person sees from the command line: help for every option, one prefix per error, counts in words,
progress bars with totals (and none, with their cursor codes, in a log file), no warnings about our own configs."""

import argparse
import sys

import pytest

from mtv.cli import main, parser
from mtv.progress import on_terminal



def options():
    for action in parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                for option in sub._actions:
                    if not isinstance(option, argparse._HelpAction):
                        yield verb, option


def test_every_option_of_every_verb_has_help_text():
    missing = [f"{verb} {'/'.join(o.option_strings) or o.dest}" for verb, o in options() if not o.help]
    assert not missing


def test_an_error_has_one_prefix(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err == "mtv train: error: pass --config FILE.yaml (see src/mtv/configs/)\n"
    assert main(["world", "--out", "/tmp/unused", "--n", "0"]) == 2
    assert capsys.readouterr().err.startswith("mtv world: error: --n must be")


def test_one_shard_is_one_shard_and_world_ticks_per_scene(tmp_path, capsys):
    assert main(["world", "--out", str(tmp_path / "w"), "--n", "3", "--size", "16", "--shard-size", "3",
                 "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    assert "wrote 3 samples in 1 shard to" in out
    assert "0/3" in err and "3/3" in err and "scene" in err


class Bar:
    def __init__(self):
        self.n, self.ticks = 0, []

    def update(self, k=1):
        self.n += k
        self.ticks.append(k)


@pytest.mark.parametrize("workers", [1, 2])
def test_world_progress_ticks_per_scene(tmp_path, workers):
    from mtv.world.generate import _render

    jobs = [(str(tmp_path), s, 3 * s, 3 * s + 3, 0, 16) for s in range(2)]
    bar = Bar()
    _render(jobs, workers, bar)
    assert bar.n == 6 and (workers > 1 or bar.ticks == [1] * 6)  # in parallel, what finished since the last look


def test_the_label_bar_has_a_total(tmp_path, capsys):
    from mtv.experts import label_shards
    from mtv.world import generate_world

    generate_world(tmp_path / "w", 4, 0, size=16, workers=1, shard_size=2, progress=False)
    label_shards(str(tmp_path / "w"), tmp_path / "out", depth="oracle", boxes="oracle", workers=0,
                 progress=True, log=lambda *_: None)
    err = capsys.readouterr().err
    assert "0/2" in err and "2/2" in err and "shard" in err


def test_eval_bars_stay_out_of_logs(eval_model_dir, eval_shards, tmp_path, capsys, monkeypatch):
    from mtv.eval import evaluate

    evaluate(eval_model_dir, eval_shards, tmp_path / "eval", progress=True)
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "\r" not in err
    assert not on_terminal(True)  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert on_terminal(True) and not on_terminal(False)


def test_loading_our_export_prints_no_token_id_warning(eval_model_dir, tmp_path):
    """transformers warns about its own default text config on every load and save; a wrong config of ours
    would still be warned about."""
    import logging

    from transformers import SiglipModel, SiglipTextConfig

    import mtv.models.siglip  # noqa: F401  (installs the filter)

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("transformers.configuration_utils")
    log.addHandler(handler)
    try:
        logging.Logger.warning_once.cache_clear()  # a warning given earlier in this process would be given again
        SiglipModel.from_pretrained(eval_model_dir).save_pretrained(tmp_path / "again")
        assert not [r for r in records if "token_id" in r.getMessage()]
        SiglipTextConfig(vocab_size=100, bos_token_id=500)
        assert [r for r in records if "got 500" in r.getMessage()]
    finally:
        log.removeHandler(handler)
