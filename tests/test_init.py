"""``model.init``: a run that starts from an existing SiglipModel directory, with its own tokenizer, image
processor and logit parameters; ``model.init_skip`` leaves chosen tensors freshly initialised."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import SiglipModel, SiglipProcessor

from fixtures import train_tree, write_toy_shards
from mtv.config import build_config
from mtv.data.transforms import Pixels, image_to_tensor
from mtv.errors import MTVError
from mtv.export import export
from mtv.models.siglip import build_model
from mtv.train import train


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A micro export whose processor normalises differently from ours (mean 0.4, std 0.25, bilinear) and
    whose logit parameters are far from SigLIP's starting values."""
    root = tmp_path_factory.mktemp("init")
    write_toy_shards(root / "data", n_shards=2, per_shard=16)
    train(build_config(train_tree(root / "run", root / "data", steps=3)), progress=False)
    out = export(root / "run", root / "export")
    model = SiglipModel.from_pretrained(out)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
        model.logit_bias.fill_(-4.0)
    model.save_pretrained(out)
    config = json.loads((out / "processor_config.json").read_text())
    config["image_processor"] |= {"image_mean": [0.4] * 3, "image_std": [0.25] * 3, "resample": 2}
    (out / "processor_config.json").write_text(json.dumps(config))
    return root, out


def _outputs(path):
    model, processor = SiglipModel.from_pretrained(path).eval(), SiglipProcessor.from_pretrained(path)
    torch.manual_seed(0)
    px = torch.randn(2, 3, 32, 32)
    ids = processor(text=["a photo of a red cube", "a blue sphere"], padding="max_length",
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=px).logits_per_image


def test_a_run_from_an_export_at_no_learning_rate_reproduces_it_exactly(source):
    root, src = source
    cfg = build_config(train_tree(root / "again", root / "data", steps=1, model__init=str(src),
                                  model__preset="tiny", optim__lr=1e-30, optim__warmup_steps=0))
    train(cfg, progress=False)
    out = export(root / "again", root / "again_export")
    assert torch.equal(_outputs(out), _outputs(src))  # weights, logit scale/bias and tokenizer all carried
    assert list(SiglipProcessor.from_pretrained(out).image_processor.image_mean) == [0.4] * 3


def test_init_skip_leaves_matching_tensors_freshly_initialised(source):
    root, src = source
    cfg = build_config(train_tree(root / "skip", root / "data", steps=1, seed=5, model__init=str(src),
                                  model__init_skip=["^text_model\\."], optim__lr=1e-30, optim__warmup_steps=0))
    train(cfg, progress=False)
    got = SiglipModel.from_pretrained(export(root / "skip", root / "skip_export")).state_dict()
    init = SiglipModel.from_pretrained(src).state_dict()
    fresh = build_model(SiglipModel.from_pretrained(src).config, seed=5).state_dict()
    name = "text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(got[name], fresh[name]) and not torch.equal(got[name], init[name])
    vision = "vision_model.encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(got[vision], init[vision]) and got["logit_bias"].item() == -4.0


def test_training_normalises_images_as_the_init_processor_does(source):
    _, src = source
    processor = SiglipProcessor.from_pretrained(src)
    img = Image.effect_mandelbrot((50, 40), (-2, -1.5, 1, 1.5), 60).convert("RGB")
    expected = processor(images=img, return_tensors="pt")["pixel_values"][0]
    got = image_to_tensor(img, 32, Pixels.of(processor.image_processor))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(image_to_tensor(img, 32), expected, atol=1e-2)  # SigLIP's defaults differ


def test_a_missing_init_is_a_one_line_error(tmp_path):
    write_toy_shards(tmp_path / "data", n_shards=1, per_shard=4)
    cfg = build_config(train_tree(tmp_path / "run", tmp_path / "data", model__init=str(tmp_path / "nope")))
    with pytest.raises(MTVError, match="model.init: .*nope is neither a SiglipModel directory"):
        train(cfg, progress=False)


def test_another_resolution_interpolates_the_position_embeddings_as_hf_does(source):
    """At 48 px the trained-at-32 model's positions are resampled bicubically: with no learning, its outputs
    equal the source model's own ``interpolate_pos_encoding`` at 48 px."""
    root, src = source
    cfg = build_config(train_tree(root / "big", root / "data", steps=1, model__init=str(src), model__image_size=48,
                                  optim__lr=1e-30, optim__warmup_steps=0))
    train(cfg, progress=False)
    out = export(root / "big", root / "big_export")
    assert SiglipProcessor.from_pretrained(out).image_processor.size["height"] == 48
    big, small = SiglipModel.from_pretrained(out).eval(), SiglipModel.from_pretrained(src).eval()
    assert big.config.vision_config.image_size == 48
    px = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(big.vision_model(px).pooler_output,
                                   small.vision_model(px, interpolate_pos_encoding=True).pooler_output,
                                   atol=1e-5, rtol=1e-5)


def test_a_resolution_off_the_patch_grid_is_refused(source):
    root, src = source
    cfg = build_config(train_tree(root / "odd", root / "data", model__init=str(src), model__image_size=44))
    with pytest.raises(MTVError, match="model.image_size 44 is not a multiple of the patch size 8; choose 40"):
        train(cfg, progress=False)


def test_a_preset_trains_at_another_resolution(source):
    root, _ = source
    train(build_config(train_tree(root / "preset48", root / "data", steps=1, model__image_size=48,
                                  optim__warmup_steps=0)), progress=False)
    out = export(root / "preset48", root / "preset48_export")
    assert SiglipModel.from_pretrained(out).config.vision_config.image_size == 48
    assert SiglipProcessor.from_pretrained(out).image_processor.size["height"] == 48


def test_a_gemma_tokenizer_siglip_trains_and_exports_with_its_tokenizer(tmp_path):
    """Fixed-resolution SigLIP 2 checkpoints are SiglipModels whose tokenizer is Gemma's: a small one, built
    from configs, starts a run, and the export carries the same tokenizer."""
    import string

    from transformers import GemmaTokenizer, SiglipImageProcessorPil

    from mtv.models.siglip import preset_config

    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁", *string.ascii_lowercase, *string.digits, ".", ","]
    tok = GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=16)
    src = tmp_path / "siglip2"
    build_model(preset_config("micro", len(tok), 16, tok.pad_token_id, tok.eos_token_id)).save_pretrained(src)
    SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                    tokenizer=tok).save_pretrained(src)
    write_toy_shards(tmp_path / "data", n_shards=1, per_shard=16)
    cfg = build_config(train_tree(tmp_path / "run", tmp_path / "data", steps=3, model__init=str(src)))
    train(cfg, progress=False)
    out = export(tmp_path / "run", tmp_path / "export")
    processor = SiglipProcessor.from_pretrained(out)
    assert type(processor.tokenizer).__name__ == "GemmaTokenizer"
    text = "a photo of a red cube"
    assert processor(text=[text], padding="max_length")["input_ids"] == tok([text], padding="max_length",
                                                                               max_length=16)["input_ids"]
    model = SiglipModel.from_pretrained(out)
    assert model.config.text_config.vocab_size == len(tok)
    assert not torch.equal(model.state_dict()["text_model.embeddings.token_embedding.weight"],
                           SiglipModel.from_pretrained(src).state_dict()["text_model.embeddings.token_embedding.weight"])


def test_an_init_skip_pattern_that_matches_no_tensor_is_a_one_line_error(source, tmp_path):
    root, out = source
    cfg = build_config(train_tree(tmp_path / "run", root / "data", model__init=str(out),
                                  model__init_skip=[r"^text_model\.", r"^vision_tower\."]))
    with pytest.raises(MTVError, match=r"^model.init_skip: '\^vision_tower\\\\.' matches no tensor of .*; fix or "
                                       r"remove it$"):
        train(cfg, progress=False)


def test_init_skip_without_an_init_is_refused():
    with pytest.raises(MTVError, match=r"model.init_skip names tensors of model.init, which is unset"):
        build_config(train_tree("run", "data", model__init_skip=[r"^text_model\."]))


def test_a_tokenizer_larger_than_the_text_towers_vocabulary_is_a_one_line_error(tmp_path):
    """The trained tokenizer (200 pieces) against a model.config whose text tower embeds 50: said before the first
    forward, where the embedding lookup would fail with an index error."""
    from mtv.models.siglip import preset_config

    write_toy_shards(tmp_path / "data", n_shards=1, per_shard=8)
    preset_config("micro", 50, 16, 0, 1).save_pretrained(tmp_path / "small")
    cfg = build_config(train_tree(tmp_path / "run", tmp_path / "data", model__config=str(tmp_path / "small")))
    with pytest.raises(MTVError, match=r"^model.vocab_size 200: the tokenizer has \d+ tokens but model.config's "
                                       r"text tower 50; use a tokenizer of at most 50 tokens"):
        train(cfg, progress=False)
    assert not list((tmp_path / "run").glob("checkpoints/*"))
