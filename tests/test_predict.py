"""`mtv predict`: what a person sees in boxes.png and depth_color.png, scores, exports with some or no heads,
and a full or read-only disk."""

import errno
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mtv.errors import MTVError
from mtv.heads import CONFIG, WEIGHTS, save_heads
from mtv.models.siglip import load_siglip
from mtv.objectives.base import registered
from mtv.objectives.depth import DepthConfig
from mtv.objectives.grounding import GroundingConfig
from mtv.predict import COLOURS, MIN_SIDE, draw_boxes, predict


def export_with(src, dest, grounding=True, depth=True):
    """A copy of the random micro model with freshly initialised heads, saved as `mtv export` saves them."""
    shutil.copytree(src, dest)
    torch.manual_seed(0)
    model, wanted = load_siglip(dest), {"grounding": GroundingConfig() if grounding else None,
                                        "depth": DepthConfig() if depth else None}
    heads = {name: registered()[name].build(cfg, model) for name, cfg in wanted.items() if cfg is not None}
    save_heads(dest, heads)
    return dest


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_labels_sit_in_a_key_below_the_picture_and_identical_boxes_stay_apart():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    boxes = [{"phrase": "a cube", "box": [8.0, 8.0, 40.0, 40.0], "score": 0.75},
             {"phrase": "the cube", "box": [8.0, 8.0, 40.0, 40.0], "score": 0.5}]
    sheet = np.asarray(draw_boxes(img, boxes))
    factor = MIN_SIDE // 64
    picture = sheet[:MIN_SIDE]
    enlarged = np.asarray(img.resize((MIN_SIDE, MIN_SIDE), Image.NEAREST))
    inner = (slice(8 * factor + 20, 40 * factor - 20),) * 2
    assert np.array_equal(picture[inner], enlarged[inner])  # no label drawn over what the box holds
    outside = picture[45 * factor:, :]
    assert np.array_equal(outside, enlarged[45 * factor:, :])
    colours = {tuple(int(COLOURS[i][k:k + 2], 16) for k in (1, 3, 5)) for i in range(2)}
    drawn = {tuple(p) for p in picture[8 * factor: 40 * factor, 8 * factor].tolist()}
    assert colours <= drawn | {tuple(p) for p in picture[8 * factor + 3, 8 * factor: 40 * factor].tolist()}
    assert sheet.shape[0] > MIN_SIDE and (sheet[MIN_SIDE:] < 128).any()  # the key holds text


def test_predict_writes_scores_and_a_depth_colour_bar(eval_model_dir, tmp_path, photo):
    model = export_with(eval_model_dir, tmp_path / "export")
    result = predict(model, photo, ["a red cube", "a red cube"], tmp_path / "pred")
    assert json.loads((tmp_path / "pred" / "prediction.json").read_text()) == result
    scores = [b["score"] for b in result["boxes"]]
    assert all(0 < s < 1 for s in scores) and scores[0] == scores[1]  # one phrase twice: one box, one score
    # the score is the region-text head's sigmoid(t cos + b) for the predicted box, computed here by hand
    from mtv.heads import load_heads
    from mtv.models.tokenizer import load_processor
    from mtv.models.vision import encode_images

    siglip, processor = load_siglip(model).eval(), load_processor(model)
    g = load_heads(model, siglip)["grounding"]
    with torch.no_grad():
        pixels = processor(images=Image.open(photo).convert("RGB"), return_tensors="pt")["pixel_values"]
        tower = encode_images(siglip.vision_model, pixels)
        tokens = processor(text=["a red cube"], padding="max_length", return_tensors="pt")
        text = torch.nn.functional.normalize(siglip.get_text_features(**tokens).pooler_output, dim=-1)
        box = torch.tensor([[v / 64 for v in result["boxes"][0]["box"]]])
        region = g.prompter.regions(tower.tokens[:1], tower.grid, box[None])[0, 0]
        cos = torch.nn.functional.cosine_similarity(region, text[0], dim=0)
        expected = torch.sigmoid(g.logit_scale.exp() * cos + g.logit_bias)
    assert scores[0] == pytest.approx(float(expected), rel=1e-2)  # boxes are rounded to 0.1 px in the JSON
    bar = np.asarray(Image.open(tmp_path / "pred" / "depth_color.png"))
    assert bar.shape[0] == MIN_SIDE and bar.shape[1] > MIN_SIDE  # the picture, then its colour bar
    column = bar[:, MIN_SIDE + 10]
    assert not np.array_equal(column[0], column[-1])  # the bar runs from near to far


def test_an_export_with_some_heads_predicts_what_it_has(eval_model_dir, tmp_path, photo):
    depth_only = export_with(eval_model_dir, tmp_path / "depth_only", grounding=False)
    result = predict(depth_only, photo, ["a cube"], tmp_path / "a")
    assert "depth" in result and "boxes" not in result and "grounding head" in result["not_predicted"]["boxes"]
    boxes_only = export_with(eval_model_dir, tmp_path / "boxes_only", depth=False)
    result = predict(boxes_only, photo, ["a cube"], tmp_path / "b")
    assert len(result["boxes"]) == 1 and "depth" not in result and not (tmp_path / "b" / "depth.png").exists()
    with pytest.raises(MTVError, match="needs a depth or grounding head.*has none") as err:
        predict(eval_model_dir, photo, ["a cube"], tmp_path / "c")  # a plain SigLIP
    assert "\n" not in str(err.value)
    (tmp_path / "depth_only" / WEIGHTS).unlink()  # heads.json without its weights
    with pytest.raises(MTVError, match=f"{CONFIG} and {WEIGHTS} are not readable"):
        predict(depth_only, photo, [], tmp_path / "d")


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on device"),
                                         (errno.EROFS, "read-only file system")])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_partial_file(eval_model_dir, tmp_path, photo,
                                                                         monkeypatch, code, words):
    model = export_with(eval_model_dir, tmp_path / "export")
    real = pathlib.Path.write_bytes

    def failing(self, data):
        if self.name.startswith("boxes.png"):
            real(self, data[:10])  # what a full disk leaves: the start of the file
            raise OSError(code, "injected")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", failing)
    with pytest.raises(MTVError) as err:
        predict(model, photo, ["a cube"], tmp_path / "pred")
    message = str(err.value)
    assert words in message and "boxes.png" in message and "\n" not in message
    assert not list((tmp_path / "pred").glob("*.tmp")) and not (tmp_path / "pred" / "boxes.png").exists()
