"""`mtv report`: several runs overlaid in a radar plot (Figure 1 style) and a side-by-side table; suite reports
render rmse/absrel as numbers and every other metric as a percentage."""

import errno
import json
import os

import pytest
from PIL import Image

from mtv.cli import main
from mtv.eval.radar import _axis_scale, _drawn, compare, spread_labels, table
from mtv.eval.report import render_markdown

RUN = {"zeroshot_top1": 0.30, "retrieval_i2t_r1": 0.20, "seg_miou": 0.40, "depth_rmse": 0.60,
       "corr_geo_recall": 0.35, "corr_sem_pck": 0.20}


def _run(path, scale, **extra):
    path.mkdir()
    metrics = {k: (v / scale if k.endswith("rmse") else v * scale) for k, v in RUN.items()} | extra
    (path / "report.json").write_text(json.dumps({"metrics": metrics}))
    return str(path)


def test_compare_writes_radar_and_table(tmp_path, capsys):
    runs = [_run(tmp_path / "VL", 1.0), _run(tmp_path / "VL+SSL", 1.2, grounding_acc50=0.5)]
    assert main(["report", *runs, "--out", str(tmp_path / "cmp")]) == 0
    assert "6 axes" in capsys.readouterr().out  # grounding is in one run only: not an axis
    with Image.open(tmp_path / "cmp" / "radar.png") as im:
        assert im.size[0] > 800
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| metric | VL | VL+SSL |" in md  # the every-metric table, after the headline one
    assert "| depth_rmse | 0.600 | 0.500 |" in md and "| seg_miou | 40.0% | 48.0% |" in md
    assert "| grounding_acc50 | — | 50.0% |" in md


def test_compare_names_same_named_runs_apart_and_shows_their_floor(tmp_path):
    runs = []
    for name, floor in (("a", 0.2), ("b", 0.4)):
        (tmp_path / name).mkdir()
        run = _run(tmp_path / name / "eval", 1.0)
        report = json.loads((tmp_path / name / "eval" / "report.json").read_text())
        report |= {"metrics_floor": {"seg_miou": floor}, "metrics_prior": {"seg_miou": 0.1}}
        (tmp_path / name / "eval" / "report.json").write_text(json.dumps(report))
        runs.append(run)
    compare(runs, tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    # each run keeps its own floor (runs may be different encoders); the image-free prior is the data's, one column
    assert "| metric | a/eval | b/eval | a/eval untrained floor | b/eval untrained floor | image-free prior |" in md
    assert "| seg_miou | 40.0% | 40.0% | 20.0% | 40.0% | 10.0% |" in md


def test_value_labels_of_close_runs_do_not_overlap_and_keep_their_order():
    """Four labels 0.001 apart in radius on each axis, as runs with close values put them (the ladder's depth
    RMSEs 1.966, 1.985, 1.989) print over each other unless spread; spread, no two boxes overlap and the lowest
    stays innermost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(8, 8))
    ax = fig.add_subplot(polar=True)
    ax.set_ylim(0, 1.05)
    labels = {a: [ax.text(a, 0.6 + 0.001 * i, f"1.9{i}5", fontsize=10, ha="center", va="center") for i in range(4)]
              for a in (0.0, 0.8, 1.57)}  # a vertical, a diagonal and a horizontal axis
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    assert labels[0.0][0].get_window_extent(renderer).overlaps(labels[0.0][1].get_window_extent(renderer))
    spread_labels(fig, labels)
    for texts in labels.values():
        boxes = [t.get_window_extent(renderer) for t in texts]
        assert not any(boxes[i].overlaps(boxes[j]) for i in range(4) for j in range(i + 1, 4))
        radii = [t.get_position()[1] for t in texts]
        assert radii == sorted(radii) and radii[0] == 0.6 and radii[-1] < 1.5
    plt.close(fig)


def test_axes_put_the_best_run_on_the_rim_whichever_direction_is_better():
    up, down, flat = _axis_scale([0.2, 0.4], False), _axis_scale([0.2, 0.4], True), _axis_scale([0.3, 0.3], False)
    assert [up(0.2), up(0.4)] == [0.35, 1.0] and [down(0.2), down(0.4)] == [1.0, 0.35] and flat(0.3) == 0.35


def test_axes_span_the_spread_bands_and_the_floor():
    runs = [("a", {"seg_miou": 0.3}), ("b", {"seg_miou": 0.5})]
    assert sorted(_drawn("seg_miou", runs, [{"seg_miou": 0.1}, {}], {"seg_miou": 0.05})) == \
        pytest.approx([0.05, 0.2, 0.4, 0.5, 0.5])


def test_user_mistakes(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "report.json: not found" in capsys.readouterr().err
    few = _run(tmp_path / "few", 1.0)
    (tmp_path / "few" / "report.json").write_text(json.dumps({"metrics": {"seg_miou": 0.1}}))
    # too few shared metrics for a radar: the table is still written, and the output says why there is no radar
    assert main(["report", few, "--out", str(tmp_path / "o")]) == 0
    assert "no radar" in capsys.readouterr().out and not (tmp_path / "o" / "radar.png").exists()
    assert "| seg_miou | 10.0% |" in (tmp_path / "o" / "compare.md").read_text()
    assert table([("a", {"x_rmse": 1.0}), ("b", {"y": 0.5})]).count("—") == 2


def test_suite_markdown_states_probe_settings():
    report = {"model": "m", "suite": "world", "data": "d", "train": "t", "num_samples": {"train": 4, "test": 2},
              "metrics": {"seg_miou": 0.5, "depth_rmse": 1.25}, "chance": {}, "not_run": {"grounding": "no head"},
              "skipped": {"total": 1, "test/depth/no_metric_depth": 1},
              "config": {"batch_size": 8, "depth": {"seed": 0, "epochs": 10, "crop": "none"},
                         "corr_geo": {"pairs": 3, "protocols": {"corr_geo_recall*": {"protocol": "mtv"},
                                                                "corr_geo_p3d_recall*": {"protocol": "probe3d"}}}}}
    md = render_markdown(report)
    assert "| seg_miou | 50.0% | — |" in md and "| depth_rmse | 1.250 | — |" in md
    assert "- **depth**: seed 0; epochs 10; crop none" in md
    # each metric prefix's protocol on its own line under its probe
    assert "- **corr_geo**: pairs 3\n  - `corr_geo_recall*`: protocol mtv\n  - `corr_geo_p3d_recall*`: protocol probe3d" in md
    assert "Not run: **grounding** — no head." in md and "Skipped 1 items: test/depth/no_metric_depth 1" in md


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"no": "metrics"})])
def test_a_broken_report_is_named(tmp_path, bad):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(bad)
    with pytest.raises(Exception, match="not an mtv eval report"):
        compare([str(tmp_path / "r")] * 2, tmp_path / "o")


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch, code, words):
    from matplotlib.figure import Figure

    def full(self, path, **kw):
        open(path, "wb").write(b"\x89PNG half")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Figure, "savefig", full)
    runs = [_run(tmp_path / "VL", 1.0), _run(tmp_path / "VL+SSL", 1.2)]
    assert main(["report", *runs, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and str(tmp_path / "cmp" / "radar.png") in err
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.md"]  # whole, or not there


def _model(path, metrics, floor=None, not_applicable=None):
    path.mkdir()
    (path / "report.json").write_text(json.dumps({"metrics": metrics, "metrics_floor": floor or {},
                                                  "metrics_prior": {"seg_miou": 0.1},
                                                  "not_applicable": not_applicable or {}}))
    return str(path)


def test_several_encoders_share_one_table_5_and_one_radar(tmp_path):
    """Rows are models, each followed by its own untrained floor; columns are the headline metrics; a text
    metric of an image-only encoder reads n/a; the radar has one legend entry per model and per model's floor."""
    dense = {k: v for k, v in RUN.items() if not k.startswith(("zeroshot", "retrieval"))}
    text_free = {"zeroshot": "a dinov2 encoder has no text tower", "retrieval": "a dinov2 encoder has no text tower"}
    runs = [_model(tmp_path / "siglip", RUN, floor={"seg_miou": 0.3, "depth_rmse": 0.7}),
            _model(tmp_path / "dinov2", {**dense, "seg_miou": 0.5}, floor={"seg_miou": 0.25},
                   not_applicable=text_free)]
    s = compare(runs, tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert ("| model | zero-shot classification | I→T retrieval | semantic seg. (mIoU) | geometric corr. | "
            "semantic corr. | mono. depth (RMSE) |") in md
    assert "| siglip | 30.0% | 20.0% | 40.0% | 35.0% | 20.0% | 0.600 |" in md
    assert "| siglip untrained floor | — | — | 30.0% | — | — | 0.700 |" in md
    assert "| dinov2 | n/a | n/a | 50.0% | 35.0% | 20.0% | 0.600 |" in md
    assert "| dinov2 untrained floor | n/a | n/a | 25.0% | — | — | — |" in md
    assert "| image-free prior | — | — | 10.0% | — | — | — |" in md
    assert "| zeroshot_top1 | 30.0% | n/a | — | — | — |" in md  # every-metric table: n/a, and no floor has it
    assert s["axes"] == ["seg_miou", "corr_geo_recall", "corr_sem_pck", "depth_rmse"]  # what both report
    assert s["legend"] == ["siglip untrained floor", "siglip", "dinov2 untrained floor", "dinov2"]
