"""Export: the public Quick Start loads our checkpoint unchanged, and training preprocesses like it does."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import SiglipModel, SiglipProcessor

from fixtures import train_tree, write_toy_shards
from mtv.config import build_config
from mtv.data.transforms import image_to_tensor, tokenize
from mtv.export import export
from mtv.models.siglip import build_model, preset_config
from mtv.train import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    write_toy_shards(root / "data", n_shards=2, per_shard=16)
    train(build_config(train_tree(root / "run", root / "data", steps=3)), progress=False)
    return root / "run", export(root / "run", root / "export")


def photo(tmp_path):
    from skimage import data

    path = tmp_path / "chelsea.jpg"
    Image.fromarray(data.chelsea()).save(path)  # a real 300x451 photo
    return path


def test_quickstart_runs_unchanged_on_the_export(exported, tmp_path):
    _, out = exported
    result = subprocess.run([sys.executable, "-m", "mtv.quickstart", str(out), str(photo(tmp_path))],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"\d+\.\d% that image 0 is 'a photo of 2 cats'", result.stdout.strip())


def test_exported_weights_are_the_checkpoints(exported):
    run, out = exported
    state = torch.load(sorted((run / "checkpoints").glob("*.pt"))[-1], weights_only=False)["model"]
    saved = load_file(out / "model.safetensors")
    model = SiglipModel.from_pretrained(out)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=0)
    assert saved.keys() <= state.keys()


def test_training_preprocessing_equals_the_processor(exported, tmp_path):
    _, out = exported
    processor = SiglipProcessor.from_pretrained(out)
    size = processor.image_processor.size["height"]
    img = Image.open(photo(tmp_path))
    expected = processor(images=img, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(image_to_tensor(img, size), expected, atol=1e-5, rtol=0)
    text = "a photo of a large red cube left of a small ball"
    ids = processor(text=[text], padding="max_length", return_tensors="pt")["input_ids"][0]
    assert torch.equal(tokenize(processor.tokenizer, text, processor.tokenizer.model_max_length), ids)
    assert set(processor(text=[text], images=img, padding="max_length")) == {"input_ids", "pixel_values"}


def test_logit_parameters_start_at_the_siglip_recipe():
    model = build_model(preset_config("micro", 100, 16, 0, 1))
    assert model.logit_scale.item() == pytest.approx(math.log(10))
    assert model.logit_bias.item() == pytest.approx(-10)


def test_quickstart_without_arguments_prints_its_usage():
    result = subprocess.run([sys.executable, "-m", "mtv.quickstart"], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1 and result.stderr.strip().startswith("usage: python -m mtv.quickstart")
    assert "Traceback" not in result.stderr


def test_an_export_appears_whole_or_not_at_all(exported, tmp_path, monkeypatch):
    import errno

    import mtv.export
    from mtv.errors import MTVError

    run, _ = exported
    out = export(run, tmp_path / "e")
    before = sorted(p.name for p in out.iterdir())

    def full_disk(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mtv.export, "save_heads", full_disk)
    with pytest.raises(MTVError, match="e: cannot write the export \\(No space left on device\\)"):
        export(run, tmp_path / "e")
    assert sorted(p.name for p in out.iterdir()) == before  # the earlier export is untouched
    with pytest.raises(MTVError):
        export(run, tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]  # no half-written directory, no temporary left
    monkeypatch.undo()
    assert export(run, tmp_path / "e") == out and sorted(p.name for p in out.iterdir()) == before
