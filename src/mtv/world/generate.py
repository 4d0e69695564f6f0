"""MTV World samples as webdataset shards: one sample → a dict of encoded members; shards in parallel.

Sample ``i`` depends only on ``(seed, i)``, and shards are written with fixed tar metadata, so the same
arguments give byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mtv.atomic import write_text
from mtv.data.schema import (CAPTION, DEPTH, META, SEG, VIEW2, VIEW2_DEPTH, VIEW2_SEG, encode_json, encode_metric_depth,
                             encode_png)
from mtv.data.shards import DATASET_META, ShardWriter, shard_name
from mtv.errors import MTVError, writable_dir
from mtv.world.captions import ZERO_SHOT_TEMPLATES, caption
from mtv.world.render import SEMANTIC_LABELS, View, render
from mtv.world.scene import CLASSES, Camera, sample_cameras, sample_scene

DEPTH_SCALE = 0.001  # scene units per uint16 step: 1 mm if a unit is a metre; the ground ends well before 65.5
MIN_MAIN_FRACTION = 0.01  # the main object must cover at least this much of view 1, else the scene is redrawn
REDRAWS = 8
WORLD_VERSION = 3  # 2: rolling cameras over wider heights, distances and fields of view; 3: second view 30–80° away


def box(mask: np.ndarray) -> list[float] | None:
    """xyxy pixel-edge bounding box of a boolean mask (x1, y1 exclusive); None if empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _round(m: np.ndarray) -> list:
    return np.round(m, 6).tolist()


def _camera_json(cam: Camera) -> dict:
    return {"K": _round(cam.K), "world_to_cam": _round(cam.world_to_cam)}


def render_sample(index: int, seed: int, size: int) -> tuple[str, dict, View, View]:
    """The sample's caption, JSON annotation and two views, from ``default_rng([seed, index])`` alone."""
    rng = np.random.default_rng([seed, index])
    for _ in range(REDRAWS):  # rarely more than one: the first object is placed where the camera looks
        scene = sample_scene(rng)
        cam1, cam2 = sample_cameras(rng, size)
        view1 = render(scene, cam1, rng)
        visible = np.bincount(view1.instance.ravel() + 1, minlength=len(scene.objects) + 1)[1:]
        main = int(visible.argmax())
        if visible[main] >= MIN_MAIN_FRACTION * size * size:
            break
    view2 = render(scene, cam2, rng)
    visible = [int(v) for v in visible]
    text = caption(scene.objects, main, visible, cam1, rng)
    objects = [{"phrase": o.phrase, "colour": o.colour, "shape": o.shape, "size": o.size,
                "box": box(view1.instance == k), "visible_pixels": visible[k],
                "position": np.round(o.centre, 6).tolist()} for k, o in enumerate(scene.objects)]
    depth = {"type": "metric", "scale": DEPTH_SCALE, "shift": 0.0}
    cls = scene.objects[main].class_name
    meta = {"class": cls, "class_id": CLASSES.index(cls), "main": main, "objects": objects,
            "camera": _camera_json(cam1), "depth": depth, "view2_depth": depth,
            "view2": {"camera": _camera_json(cam2),
                      "cam1_to_cam2": _round(cam2.world_to_cam @ np.linalg.inv(cam1.world_to_cam))}}
    return text, meta, view1, view2


def make_sample(index: int, seed: int, size: int) -> dict:
    """One webdataset sample: key, caption, annotation, and image, depth and labels of both views."""
    text, meta, v1, v2 = render_sample(index, seed, size)
    return {"__key__": f"{index:08d}", CAPTION: text.encode(), META: encode_json(meta),
            "png": encode_png(v1.rgb), DEPTH: encode_metric_depth(v1.depth, DEPTH_SCALE), SEG: encode_png(v1.seg),
            VIEW2: encode_png(v2.rgb), VIEW2_DEPTH: encode_metric_depth(v2.depth, DEPTH_SCALE),
            VIEW2_SEG: encode_png(v2.seg)}


_scenes_done = None  # in a pool worker: the shared count of scenes written, for the parent's progress bar


def _share_count(counter) -> None:
    global _scenes_done
    _scenes_done = counter


def _write_shard(job: tuple[str, int, int, int, int, int], tick=None) -> str:
    out, shard, start, stop, seed, size = job
    name = shard_name(shard)
    with ShardWriter(os.path.join(out, name)) as w:
        for i in range(start, stop):
            w.write(make_sample(i, seed, size))
            if tick is not None:
                tick()
            elif _scenes_done is not None:
                with _scenes_done.get_lock():
                    _scenes_done.value += 1
    return name


def _render(jobs: list, workers: int, bar) -> None:
    """Writes the shards of ``jobs``, the bar ticking once per scene."""
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            _write_shard(job, tick=bar.update)
        return
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent may hold torch/OpenMP threads
    counter = ctx.Value("q", 0)
    with ctx.Pool(min(workers, len(jobs)), initializer=_share_count, initargs=(counter,)) as pool:
        result = pool.map_async(_write_shard, jobs)
        while not result.ready():
            result.wait(0.2)
            bar.update(counter.value - bar.n)
        result.get()  # a worker's error, raised here
    bar.update(counter.value - bar.n)


def dataset_meta(n: int, seed: int, size: int, shard_size: int, shards: list[str]) -> dict:
    return {"name": "mtv-world", "version": WORLD_VERSION, "seed": seed, "n": n, "size": size, "shard_size": shard_size,
            "shards": shards, "classes": CLASSES, "templates": ZERO_SHOT_TEMPLATES,
            "semantic_labels": SEMANTIC_LABELS,
            "depth": {"unit": "scene units", "type": "metric z-depth", "scale": DEPTH_SCALE, "shift": 0.0,
                      "invalid": 0},
            "camera": "OpenCV (x right, y down, z forward); K in pixel-edge coordinates (pixel centres at +0.5)"}


def _check_args(out: Path, n: int, seed: int, size: int, workers: int, shard_size: int) -> None:
    for name, value, least in (("n", n, 1), ("seed", seed, 0), ("size", size, 16), ("workers", workers, 1),
                               ("shard_size", shard_size, 1)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise MTVError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {value!r}")
    writable_dir(out, "shards", "--out")
    ours = {shard_name(s) for s in range(-(-n // shard_size))}
    stale = sorted(p.name for p in out.glob("shard-*.tar") if p.name not in ours)
    if stale:
        raise MTVError(f"{out}: holds {len(stale)} shard(s) this run would not overwrite (e.g. {stale[0]}); "
                       "delete them or choose an empty --out")


def generate_world(out: str | os.PathLike, n: int, seed: int, size: int = 64, workers: int = 1,
                   shard_size: int = 256, preview: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Renders ``n`` scenes into ``out/shard-*.tar`` plus ``out/dataset.json``; optionally a preview PNG grid.

    Returns a summary: ``n``, ``shards`` (names), ``seconds``, ``images_per_s``."""
    out = Path(out)
    _check_args(out, n, seed, size, workers, shard_size)
    jobs = [(str(out), s, start, min(start + shard_size, n), seed, size)
            for s, start in enumerate(range(0, n, shard_size))]
    begin = time.perf_counter()
    with tqdm(total=n, unit="scene", desc="mtv world", disable=not progress) as bar:
        _render(jobs, workers, bar)
    seconds = time.perf_counter() - begin
    names = [shard_name(job[1]) for job in jobs]
    meta = dataset_meta(n, seed, size, shard_size, names)
    write_text(out / DATASET_META, json.dumps(meta, indent=2, sort_keys=True))
    if preview is not None:
        from mtv.world.preview import write_preview

        write_preview([str(out / name) for name in names], preview)
    return {"n": n, "shards": names, "seconds": seconds, "images_per_s": n / seconds}
