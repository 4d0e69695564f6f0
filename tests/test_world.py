"""MTV World: determinism, sample format, label consistency, multi-view geometry and analytic ray casting."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mtv.data.schema import decode_depth, decode_image
from mtv.data.shards import list_shards, read_samples
from mtv.errors import MTVError
from mtv.world import CLASSES, COLOURS, SHAPES, generate_world
from mtv.world.captions import SHAPE_WORDS
from mtv.world.generate import render_sample
from mtv.world.render import SEMANTIC_LABELS, render
from mtv.world.scene import Obj, Scene, orbit_camera

N, SEED, SIZE, SHARD = 24, 3, 48, 10
MEMBERS = {"png", "txt", "json", "depth.png", "seg.png", "view2.png", "view2.depth.png", "view2.seg.png"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    summary = generate_world(out, N, SEED, size=SIZE, shard_size=SHARD, preview=out / "preview.png", progress=False)
    return out, summary


@pytest.fixture(scope="module")
def samples(world):
    return list(read_samples(list_shards(world[0])))


def _seg(raw: dict, ext: str = "seg.png") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw[ext])))


def test_classes_are_fixed():
    assert len(CLASSES) == 32 == len(set(CLASSES)) == len(COLOURS) * len(SHAPES)
    assert CLASSES[:4] == ["red sphere", "red cube", "red cylinder", "red cone"]
    assert CLASSES == [f"{c} {s}" for c in COLOURS for s in SHAPES]


def test_same_seed_is_byte_identical_whatever_the_workers(world, tmp_path):
    out, summary = world
    assert summary["n"] == N and summary["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    again = generate_world(tmp_path / "two", N, SEED, size=SIZE, shard_size=SHARD, workers=2, progress=False)
    other = generate_world(tmp_path / "other", N, SEED + 1, size=SIZE, shard_size=SHARD, progress=False)
    for name in summary["shards"]:
        assert (out / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
        assert (out / name).read_bytes() != (tmp_path / "other" / name).read_bytes()
    assert again["shards"] == other["shards"] == summary["shards"]


def test_dataset_json_and_preview(world):
    out, _ = world
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["name"], meta["n"], meta["seed"], meta["size"]) == ("mtv-world", N, SEED, SIZE)
    assert meta["classes"] == CLASSES and meta["semantic_labels"] == ["sky", "ground", *SHAPES]
    assert all("{}" in t for t in meta["templates"]) and meta["depth"]["unit"] == "scene units"
    preview = Image.open(out / "preview.png")
    assert preview.format == "PNG" and preview.width > 400


def test_every_sample_is_complete_and_decodes(samples):
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(N)]
    for raw in samples:
        assert MEMBERS <= set(raw)
        meta = json.loads(raw["json"])
        for ext in ("png", "view2.png"):
            assert np.asarray(decode_image(raw, ext)).shape == (SIZE, SIZE, 3)
        for ext in ("seg.png", "view2.seg.png"):
            seg = _seg(raw, ext)
            assert seg.dtype == np.uint8 and seg.shape == (SIZE, SIZE) and seg.max() < len(SEMANTIC_LABELS)
        for ext, key in (("depth.png", "depth"), ("view2.depth.png", "view2_depth")):
            assert Image.open(io.BytesIO(raw[ext])).mode.startswith("I;16")
            depth, seg = decode_depth(raw, meta[key], ext), _seg(raw, ext.replace("depth", "seg"))
            assert np.all(np.isfinite(depth[seg != 0]) & (depth[seg != 0] > 0)) and np.all(np.isnan(depth[seg == 0]))
        assert meta["class"] == f"{meta['objects'][meta['main']]['colour']} {meta['objects'][meta['main']]['shape']}"
        assert CLASSES[meta["class_id"]] == meta["class"]
        assert 1 <= len(meta["objects"]) <= 4 and meta["objects"][meta["main"]]["box"] is not None


def test_captions_name_the_main_object(samples):
    for raw in samples:
        text, meta = raw["txt"].decode(), json.loads(raw["json"])
        main = meta["objects"][meta["main"]]
        assert text == text.lower() and main["colour"] in text
        assert any(word in text.split() for word in SHAPE_WORDS[main["shape"]])


def test_boxes_are_the_bounding_boxes_of_visible_pixels(samples):
    for i in range(0, N, 3):
        _, meta, view1, _ = render_sample(i, SEED, SIZE)
        assert meta == json.loads(samples[i]["json"])  # the shard holds what render_sample computes
        assert np.array_equal(view1.seg, _seg(samples[i]))
        for k, obj in enumerate(meta["objects"]):
            rows, cols = np.nonzero(view1.instance == k)
            assert obj["visible_pixels"] == rows.size
            if rows.size == 0:
                assert obj["box"] is None
                continue
            assert obj["box"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert 0 <= obj["box"][0] < obj["box"][2] <= SIZE and 0 <= obj["box"][1] < obj["box"][3] <= SIZE
            assert np.all(view1.seg[rows, cols] == 2 + SHAPES.index(obj["shape"]))


def _correspondences(raw: dict):
    """View-1 pixel centres moved into view 2 with depth, K and cam1_to_cam2: their view-1 (row, col), their
    view-2 position (x, y) in pixel-centre coordinates, and their z in camera 2."""
    meta = json.loads(raw["json"])
    depth = decode_depth(raw, meta["depth"])
    K1, K2 = np.array(meta["camera"]["K"]), np.array(meta["view2"]["camera"]["K"])
    T = np.array(meta["view2"]["cam1_to_cam2"])
    v, u = np.nonzero(np.isfinite(depth))
    z = depth[v, u]
    X2 = T[:3, :3] @ (np.linalg.inv(K1) @ np.stack([u + 0.5, v + 0.5, np.ones_like(z)]) * z) + T[:3, 3:]
    p = K2 @ X2
    x, y = p[0] / p[2] - 0.5, p[1] / p[2] - 0.5
    inside = (X2[2] > 0) & (x >= 0) & (x <= SIZE - 1) & (y >= 0) & (y <= SIZE - 1)
    return (v[inside], u[inside]), x[inside], y[inside], X2[2, inside]


def _bilinear_depth(depth: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth at sub-pixel points, interpolating inverse depth (affine in the image on planes: exact on the
    ground and on cube faces); NaN unless all four neighbours have depth."""
    x0, y0 = np.minimum(np.floor(x).astype(int), SIZE - 2), np.minimum(np.floor(y).astype(int), SIZE - 2)
    fx, fy = x - x0, y - y0
    inv = 1 / depth
    top = inv[y0, x0] * (1 - fx) + inv[y0, x0 + 1] * fx
    bottom = inv[y0 + 1, x0] * (1 - fx) + inv[y0 + 1, x0 + 1] * fx
    return 1 / (top * (1 - fy) + bottom * fy)


def test_second_view_gives_ground_truth_correspondences(samples):
    seen = []
    for raw in samples:
        meta = json.loads(raw["json"])
        depth2 = decode_depth(raw, meta["view2_depth"], "view2.depth.png")
        seg1, seg2 = _seg(raw), _seg(raw, "view2.seg.png")
        (v, u), x, y, z2 = _correspondences(raw)
        error = np.abs(_bilinear_depth(depth2, x, y) - z2)
        visible = error < 0.01 * z2  # not occluded in view 2 (and not on a depth edge)
        seen.append(visible.mean())
        assert np.median(error[visible]) < 0.002  # 1 mm depth steps; planes interpolate exactly
        assert (seg1[v, u][visible] == seg2[np.round(y).astype(int), np.round(x).astype(int)][visible]).mean() > 0.97
    assert np.mean(seen) > 0.8  # most points are seen again; a wrong transform gives almost none


def _one_object_scene(obj: Obj) -> Scene:
    return Scene([obj], np.array([0.0, 0.0, 1.0]), np.ones(3), 0.3, np.full(3, 0.4), (1.0, 0.0, 0.0),
                 (np.ones(3), np.ones(3)), 0.0)


@pytest.mark.parametrize("shape", ["sphere", "cube"])
def test_ray_casting_matches_the_analytic_case(shape):
    size, distance = 65, 5.0  # odd size: the optical axis passes through the centre of pixel (32, 32)
    obj = Obj(shape, "red", "large", np.zeros(3), 0.0, np.array([0.9, 0.1, 0.1]))
    centre = obj.centre
    cam = orbit_camera(-np.pi / 2, 0.0, distance, centre, np.deg2rad(40), size)  # looks along +y at the centre
    view = render(_one_object_scene(obj), cam, np.random.default_rng(0))
    front = obj.radius if shape == "sphere" else obj.half_side
    assert view.depth[32, 32] == pytest.approx(distance - front, abs=1e-4)
    assert view.seg[32, 32] == 2 + SHAPES.index(shape) and view.instance[32, 32] == 0
    if shape == "sphere":  # silhouette: pixel centres whose ray passes within r of the centre
        v, u = np.mgrid[:size, :size] + 0.5
        f = cam.K[0, 0]
        rays = np.stack([(u - size / 2) / f, (v - size / 2) / f, np.ones_like(u)], -1)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        miss = np.sqrt(1 - rays[..., 2] ** 2) * distance  # the centre lies on the optical axis
        assert np.array_equal(view.instance == 0, miss < obj.radius)


@pytest.mark.parametrize("roll_deg", [-20.0, 0.0, 15.0])
def test_a_rolled_camera_turns_the_image_about_its_centre(roll_deg):
    """The world's vertical through the target projects through the image centre, turned by the roll: its
    upward image direction (x right, y down) is (-sin roll, -cos roll)."""
    target = np.array([0.3, -0.2, 0.4])
    cam = orbit_camera(0.7, np.deg2rad(30), 6.0, target, np.deg2rad(40), 64, np.deg2rad(roll_deg))

    def pixel(p):
        x = cam.K @ (cam.world_to_cam[:3, :3] @ p + cam.world_to_cam[:3, 3])
        return x[:2] / x[2]

    centre, above = pixel(target), pixel(target + [0.0, 0.0, 0.5])
    assert centre == pytest.approx([32.0, 32.0])
    d = (above - centre) / np.linalg.norm(above - centre)
    assert d == pytest.approx([-np.sin(np.deg2rad(roll_deg)), -np.cos(np.deg2rad(roll_deg))], abs=1e-9)


def test_world_cameras_roll_and_vary(samples):
    """Version 2 worlds: cameras roll both ways, so the horizon is not a fixed row."""
    rolls = []
    for s in samples:
        R = np.array(json.loads(s["json"])["camera"]["world_to_cam"])[:3, :3]
        up = R @ np.array([0.0, 0.0, 1.0])  # the world's up in the camera frame
        rolls.append(np.degrees(np.arctan2(-up[0], -up[1])))
    assert max(rolls) > 3 and min(rolls) < -3 and max(np.abs(rolls)) <= 20 + 1e-6


def test_bad_arguments_raise_one_line_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for kwargs in ({"n": 0}, {"n": 2, "size": 8}, {"n": 2, "out": blocker / "sub"}, {"n": 2, "workers": 0},
                   {"n": 2, "seed": -1}):
        with pytest.raises(MTVError) as e:
            generate_world(**{"out": tmp_path / "w", "seed": 0, "progress": False, **kwargs})
        assert "\n" not in str(e.value)
    generate_world(tmp_path / "w", 12, 0, size=16, shard_size=4, progress=False)
    with pytest.raises(MTVError, match="would not overwrite"):
        generate_world(tmp_path / "w", 4, 0, size=16, shard_size=4, progress=False)


def test_the_preview_keys_each_segmentation_colour_to_its_label():
    from matplotlib.figure import Figure

    from mtv.world.preview import SEG_COLOURS, seg_key
    from mtv.world.render import SEMANTIC_LABELS

    seg = np.array([[0, 1], [len(SEMANTIC_LABELS) - 1, 1]], np.uint8)
    shown = Figure().subplots().imshow(seg, cmap=SEG_COLOURS, vmin=0, vmax=len(SEMANTIC_LABELS) - 1)
    key = seg_key(shown, seg)
    assert [p.get_label() for p in key] == [SEMANTIC_LABELS[0], SEMANTIC_LABELS[1], SEMANTIC_LABELS[-1]]
    drawn = shown.to_rgba(seg, norm=True)  # the colours the picture has
    for patch, (y, x) in zip(key, [(0, 0), (0, 1), (1, 0)]):
        assert np.allclose(patch.get_facecolor(), drawn[y, x])
    assert len({tuple(p.get_facecolor()) for p in key}) == 3


def test_the_second_camera_orbits_30_to_80_degrees_away_either_way():
    """World version 3's orbit step (`AZIMUTH_STEP_DEG`): the azimuth of each camera's viewing direction, read back
    from its rotation (the optical axis is the third row, whatever the roll), differs by 30–80° in both senses."""
    from mtv.world.scene import AZIMUTH_STEP_DEG, sample_cameras

    assert AZIMUTH_STEP_DEG == (30.0, 80.0)
    steps = []
    for seed in range(2000):
        cams = sample_cameras(np.random.default_rng(seed), 64)
        az = [np.arctan2(-c.world_to_cam[2, 1], -c.world_to_cam[2, 0]) for c in cams]
        steps.append(np.rad2deg((az[1] - az[0] + np.pi) % (2 * np.pi) - np.pi))
    steps = np.array(steps)
    assert ((np.abs(steps) >= 30 - 1e-6) & (np.abs(steps) <= 80 + 1e-6)).all()
    assert np.abs(steps).min() < 31 and np.abs(steps).max() > 79  # the whole range is drawn
    assert 0.45 < (steps > 0).mean() < 0.55
