"""`evaluate` end to end on a tiny random SiglipModel and a tiny shard set with one bad image and one empty caption."""

import json

import pytest
import torch
from transformers import SiglipModel, SiglipProcessor

from mtv.cli import main
from mtv.data.schema import decode_image
from mtv.data.shards import DATASET_META, list_shards, read_samples
from mtv.errors import MTVError
from mtv.eval import evaluate
from mtv.eval.encoders import load_encoder
from mtv.eval.features import embed_images, embed_texts

KEYS_BAD = ("00000003", "00000010")  # eval_shards' undecodable image and empty caption
METRICS = ["zeroshot_top1", "zeroshot_top5", "zeroshot_mean_per_class_recall"] + \
    [f"retrieval_{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]


@pytest.fixture(scope="module")
def eval_report(eval_model_dir, eval_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out") / "report"  # not there yet: evaluate creates it
    return out, evaluate(eval_model_dir, eval_shards, out, batch_size=5, progress=False)


def test_report_json(eval_report, eval_model_dir, eval_shards):
    out, report = eval_report
    assert json.loads((out / "report.json").read_text()) == report
    assert report["model"] == str(eval_model_dir) and report["data"] == str(eval_shards)
    assert report["num_samples"] == 22 and report["num_classes"] == 8 and report["num_zeroshot_samples"] == 22
    assert list(report["metrics"]) == METRICS
    assert all(0.0 <= v <= 1.0 for v in report["metrics"].values())
    assert report["chance"]["zeroshot_top1"] == 1 / 8
    # Toy captions repeat ("a photo of a red square"): still every sample's caption is its own text (CLIP_benchmark).
    captions = [s["txt"].decode() for s in read_samples(list_shards(eval_shards)) if s["__key__"] not in KEYS_BAD]
    assert report["num_texts"] == 22 > len(set(captions))
    assert report["chance"]["retrieval_i2t_r1"] == pytest.approx(1 / 22)
    assert report["chance"]["retrieval_t2i_r1"] == pytest.approx(1 / 22)
    assert report["skipped"] == {"total": 2, "bad_image": 1, "empty_caption": 1}
    assert report["not_run"] == {}
    encoder = report["config"].pop("encoder")
    assert report["config"] == {"batch_size": 5, "templates": ["a photo of a {}.", "a rendering of a {}."],
                                "template_set": "dataset.json", "undefined": {}, "max_samples": None}
    assert encoder["family"] == "siglip" and encoder["image"]["size"] == [32, 32] and encoder["logit_bias"] == -10
    assert set(report["versions"]) == {"mtv", "torch", "transformers", "python"}


def test_report_md_has_the_table(eval_report):
    out, report = eval_report
    md = (out / "report.md").read_text()
    assert "| metric | value | chance |" in md
    assert f"| zeroshot_top1 | {report['metrics']['zeroshot_top1']:.1%} | 12.5% |" in md
    assert sum(line.startswith("| retrieval_") for line in md.splitlines()) == 6
    assert "bad_image 1, empty_caption 1" in md


def test_embedding_path_reproduces_the_quickstart_logits(eval_model_dir, eval_shards):
    model = SiglipModel.from_pretrained(eval_model_dir)
    processor = SiglipProcessor.from_pretrained(eval_model_dir)
    samples = [s for s in read_samples(list_shards(eval_shards)) if s["__key__"] not in KEYS_BAD][:5]
    images = [decode_image(s) for s in samples]
    texts = ["a photo of a red square", "a rendering of a blue disc", "green", "a photo of a yellow disc."]
    inputs = processor(text=texts, images=images, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    encoder = load_encoder(eval_model_dir)
    cos = embed_images(encoder, images, batch_size=2) @ embed_texts(encoder, texts, batch_size=3).T
    ours = cos * model.logit_scale.detach().exp() + model.logit_bias.detach()
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_max_samples_and_no_class_list(eval_model_dir, eval_shards, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for path in list_shards(eval_shards):
        (data / path.rsplit("/", 1)[1]).write_bytes(open(path, "rb").read())
    (data / DATASET_META).write_text("{}")
    report = evaluate(eval_model_dir, data, tmp_path / "out", max_samples=7, progress=False)
    assert report["num_samples"] == 7 and report["num_classes"] == 0
    assert list(report["metrics"]) == METRICS[3:]
    assert "zeroshot" in report["not_run"] and report["config"]["templates"] is None
    assert report["skipped"] == {"total": 1, "bad_image": 1}  # reading stopped before the empty caption
    assert "Not run: **zeroshot**" in (tmp_path / "out" / "report.md").read_text()


def test_user_mistakes_are_one_line_errors(eval_model_dir, eval_shards, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    (tmp_path / "bad_model").mkdir()
    (tmp_path / "bad_model" / "config.json").write_text("{not json")
    cases = [
        (tmp_path / "empty", eval_shards, tmp_path / "out", "not a model directory"),
        (tmp_path / "bad_model", eval_shards, tmp_path / "out", "config.json: not a readable model config"),
        (eval_model_dir, tmp_path / "empty", tmp_path / "out", "no .tar shards"),
        # The output is checked first, before the (bad) model and data are even looked at.
        (tmp_path / "empty", tmp_path / "empty", tmp_path / "a_file" / "out", "cannot write the report"),
    ]
    for model, data, out, message in cases:
        with pytest.raises(MTVError, match=message) as e:
            evaluate(model, data, out, progress=False)
        assert "\n" not in str(e.value)


def test_cli_prints_the_error_without_traceback(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtv eval: error: ") and err.count("\n") == 1


def test_cli_prints_the_headline_numbers_and_where_the_report_is(eval_model_dir, eval_shards, tmp_path, capsys):
    assert main(["eval", "--model", str(eval_model_dir), "--data", str(eval_shards), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert f"zeroshot_top1 {report['metrics']['zeroshot_top1']:.1%}" in printed
    assert f"{tmp_path}/report.md" in printed


def test_cli_says_when_zero_shot_did_not_run(eval_model_dir, tmp_path, capsys):
    from fixtures import write_toy_shards

    from mtv.data.shards import DATASET_META

    write_toy_shards(tmp_path / "data", n_shards=1, per_shard=6)
    (tmp_path / "data" / DATASET_META).unlink()  # no dataset.json: no class list
    assert main(["eval", "--model", str(eval_model_dir), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "o")]) == 0
    assert "eval: zeroshot not run: no class list" in capsys.readouterr().out
