"""Every encoder family `mtv eval` accepts, each as a tiny randomly initialised model built from its config and
saved with save_pretrained (with its tokenizer where the family has text): recognised from its config, its patch
grid without class or register tokens, its own preprocessing, and the world suite end to end through `mtv eval`
with the untrained floor of the same family."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
from PIL import Image

from mtv.cli import main
from mtv.errors import MTVError
from mtv.eval import evaluate
from mtv.eval.encoders import ImageSpec, encoder_class, load_encoder

VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _siglip2(path):
    """A SiglipModel whose tokenizer is Gemma's, as the fixed-resolution SigLIP 2 checkpoints are."""
    from transformers import GemmaTokenizer, SiglipImageProcessorPil, SiglipProcessor

    from mtv.models.siglip import build_model, preset_config

    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁", *string.ascii_lowercase, *string.digits, ".", ","]
    tok = GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=64)
    build_model(preset_config("micro", len(tok), 64, tok.pad_token_id, tok.eos_token_id)).save_pretrained(path)
    SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                    tokenizer=tok).save_pretrained(path)


def _clip(path):
    """CLIPModel with a CLIP tokenizer built offline from a character vocabulary and no merges."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + string.digits + ".,":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    text = dict(VIT, vocab_size=len(vocab), max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=dict(VIT, image_size=32, patch_size=8),
                         projection_dim=24)).save_pretrained(path)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(path)


def _dinov2(path, registers: int = 0):
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, \
        Dinov2WithRegistersModel

    torch.manual_seed(0)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(image_size=32, patch_size=8,
                                                                   num_register_tokens=registers, **VIT))
    else:
        model = Dinov2Model(Dinov2Config(image_size=32, patch_size=8, **VIT))
    model.save_pretrained(path)
    # DINOv2's processor: shortest edge, then a centre crop; ImageNet mean and std, bicubic
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN,
                         image_std=IMAGENET_STD, resample=3).save_pretrained(path)


def _dinov3(path):
    """DINOv3's ViT; its processor (torchvision-only) is written as the released checkpoints' config is."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    DINOv3ViTModel(DINOv3ViTConfig(image_size=32, patch_size=8, num_register_tokens=2, **VIT)).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DINOv3ViTImageProcessorFast", "do_resize": True, "size": {"height": 32, "width": 32},
        "resample": 2, "do_center_crop": None, "crop_size": None, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}))


def _vit(path):
    """A plain ViT: no family adapter names it, the AutoModel fallback takes it."""
    from transformers import ViTConfig, ViTImageProcessorPil, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, **VIT)).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.3, 0.4, 0.5],
                         image_std=[0.2, 0.25, 0.3]).save_pretrained(path)


BUILDERS = {"siglip": _siglip2, "clip": _clip, "dinov2": _dinov2, "dinov2_reg": lambda p: _dinov2(p, registers=3),
            "dinov3": _dinov3, "auto": _vit}
FAMILY = {"siglip": "siglip", "clip": "clip", "dinov2": "dinov2", "dinov2_reg": "dinov2", "dinov3": "dinov3",
          "auto": "auto"}
PREFIX = {"clip": 1, "dinov2": 1, "dinov2_reg": 1 + 3, "dinov3": 1 + 2, "auto": 1}  # class + register tokens


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    for name, build in BUILDERS.items():
        build(root / name)
    return {name: root / name for name in BUILDERS}


def _image(seed=0, size=(48, 30)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_family_is_recognised_and_gives_a_patch_grid(family_dirs, name):
    encoder = load_encoder(family_dirs[name])
    assert encoder.family == FAMILY[name] and encoder.has_text == (name in ("siglip", "clip"))
    out = encoder.encode(encoder.pixels([_image(0), _image(1)]), layers=[0, 1])
    assert out.grid == (4, 4) and out.tokens.shape == (2, 16, 32) and len(out.layers) == 2
    assert all(layer.shape == (2, 16, 32) for layer in out.layers) and out.pooled.shape[0] == 2


@pytest.mark.parametrize("name", ["clip", "dinov2", "dinov2_reg", "dinov3", "auto"])
def test_class_and_register_tokens_are_not_in_the_grid(family_dirs, name):
    encoder = load_encoder(family_dirs[name])
    px = encoder.pixels([_image(2)])
    with torch.no_grad():
        tower = encoder.model.vision_model if name == "clip" else encoder.model
        hf = tower(pixel_values=px, output_hidden_states=True)
        out = encoder.encode(px, layers=[0, 1])
    k = PREFIX[name]
    assert hf.last_hidden_state.shape[1] == 16 + k
    torch.testing.assert_close(out.tokens, hf.last_hidden_state[:, k:])
    for i in (0, 1):
        torch.testing.assert_close(out.layers[i], hf.hidden_states[i + 1][:, k:])


def test_dinov3_takes_a_non_square_grid(family_dirs):
    encoder = load_encoder(family_dirs["dinov3"])
    with torch.no_grad():
        out = encoder.encode(torch.randn(1, 3, 32, 48))
    assert out.grid == (4, 6) and out.tokens.shape == (1, 24, 32)


def _by_hand(image, size, resample, mean, std):
    x = np.asarray(image.resize((size[1], size[0]), resample), np.float64) / 255
    return torch.tensor((x - mean) / std, dtype=torch.float32).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name, resample, mean, std", [
    ("dinov2", Image.BICUBIC, IMAGENET_MEAN, IMAGENET_STD),
    ("dinov3", Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD),
    ("auto", Image.BILINEAR, [0.3, 0.4, 0.5], [0.2, 0.25, 0.3])])
def test_the_processor_configs_size_resampling_mean_and_std_are_honoured(family_dirs, name, resample, mean, std):
    """A non-square photo is resized whole (no centre crop, so dense labels stay on the grid) and normalised by
    the model's own mean and std, not SigLIP's 0.5."""
    spec = ImageSpec.from_pretrained(family_dirs[name])
    im = _image(3)
    torch.testing.assert_close(spec.pixels([im]), _by_hand(im, (32, 32), resample, mean, std), atol=1e-5, rtol=0)
    assert not torch.allclose(spec.pixels([im]), _by_hand(im, (32, 32), resample, [0.5] * 3, [0.5] * 3), atol=0.05)


def test_preprocessing_equals_the_families_own_processors(family_dirs):
    """SigLIP's processor resizes the whole frame: ours equals it on any photo; CLIP's crops the centre after
    resizing the short side, a no-op on a square photo, where ours equals it too."""
    from transformers import CLIPProcessor, SiglipProcessor

    im, square = _image(4), _image(5, size=(40, 40))
    for cls, name, photo in ((SiglipProcessor, "siglip", im), (CLIPProcessor, "clip", square)):
        theirs = cls.from_pretrained(family_dirs[name])(images=[photo], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(ImageSpec.from_pretrained(family_dirs[name]).pixels([photo]), theirs,
                                   atol=1e-5, rtol=0)


def test_clip_embeddings_give_clips_own_logits_and_no_bias(family_dirs):
    from transformers import CLIPProcessor

    from mtv.eval.features import embed_images, embed_texts

    encoder = load_encoder(family_dirs["clip"])
    processor = CLIPProcessor.from_pretrained(family_dirs["clip"])
    images, texts = [_image(6, (32, 32)), _image(7, (32, 32))], ["a red cube", "the blue sphere on the ground"]
    inputs = processor(text=texts, images=images, padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        expected = encoder.model(**inputs).logits_per_image
    scale, bias = encoder.logit_scale_and_bias()
    assert bias is None
    torch.testing.assert_close(scale * embed_images(encoder, images) @ embed_texts(encoder, texts).T, expected,
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_family_runs_the_world_suite_through_mtv_eval(family_dirs, world_eval_splits, tmp_path, name, capsys):
    train, val = world_eval_splits
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(family_dirs[name]), "--data", str(val), "--train", str(train),
                 "--suite", "world", "--epochs", "1", "--max-samples", "8", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["encoder"]["family"] == FAMILY[name]
    for key in ("seg_miou", "depth_rmse", "corr_geo_recall", "corr_sem_pck"):
        assert np.isfinite(report["metrics"][key]) and key in report["metrics_floor"], key
    md = (out / "report.md").read_text()
    if name in ("siglip", "clip"):
        assert "zeroshot_top1" in report["metrics"] and "retrieval_i2t_r1" in report["metrics"]
        assert report["not_applicable"] == {}
    else:  # text probes are not applicable: said, not an error and not a zero
        assert set(report["not_applicable"]) == {"zeroshot", "retrieval", "grounding"}
        assert not any(k.startswith(("zeroshot", "retrieval", "grounding")) for k in report["metrics"])
        assert "not applicable: zeroshot, retrieval, grounding" in capsys.readouterr().out
        assert f"Not applicable: **zeroshot** — a {FAMILY[name]} encoder has no text tower." in md
    # the floor is an untrained model of the same family and architecture
    twin = report["config"]["floor"]["model"]
    assert encoder_class(twin) is encoder_class(str(family_dirs[name]))
    assert json.loads(open(f"{twin}/config.json").read())["architectures"] == \
        json.loads((family_dirs[name] / "config.json").read_text())["architectures"]


def test_an_image_only_encoder_without_a_suite_reports_not_applicable(family_dirs, eval_shards, tmp_path):
    report = evaluate(family_dirs["dinov2"], eval_shards, tmp_path, progress=False)
    assert report["metrics"] == {} and set(report["not_applicable"]) == {"zeroshot", "retrieval"}
    assert "Not applicable: **retrieval**" in (tmp_path / "report.md").read_text()


def test_a_directory_no_family_recognises_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(MTVError, match="model_type 'bert' is no encoder family") as e:
        load_encoder(tmp_path)
    for family in ("SiglipModel", "CLIPModel", "Dinov2Model", "DINOv3ViTModel", "AutoModel"):
        assert family in str(e.value)
    assert main(["eval", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_processor_config_without_its_mean_is_named(family_dirs, tmp_path):
    cfg = json.loads((family_dirs["dinov3"] / "preprocessor_config.json").read_text())
    del cfg["image_mean"]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(MTVError, match="preprocessor_config.json: no 'image_mean'"):
        ImageSpec.from_pretrained(tmp_path)
