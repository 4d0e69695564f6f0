"""NAVI multiview pairs in the Probe3D setting: ``navi/custom_splits/pairwise_pixel_correspondences/
pairs-multiview.txt`` (``image_1 image_2 angle``, paths relative to ``navi/``), each image beside its scene's
``annotations.json`` (``filename``, ``camera`` {``q`` wxyz, ``t``, ``focal_length``}, ``image_size`` [h, w]),
``depth/<stem>.png`` (NAVI's encoding: depth = 655350 / value, 0 invalid) and ``masks/<stem>.png``.

Poses map object to camera coordinates in the OpenGL convention (y up, z backwards, as NAVI's own GL
projection assumes); they are flipped to OpenCV for `gt_matches`. Ground-truth matches are sampled on the
object mask. Each pair keeps its 3-D truth (`GeoTruth`: points in B's frame, relative angle, 1 cm steps, both
views' depth and the relative pose), and is scored by Probe3D's own protocol by default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtv.errors import MTVError, SkipSample
from mtv.eval.benchmarks import Split, limit, lines, need, read_map
from mtv.eval.correspondence import PROBE3D, GeoTruth, Pair, gt_matches, relative_angle

LAYOUT = ("NAVI as <root>/navi/custom_splits/pairwise_pixel_correspondences/pairs-multiview.txt with "
          "<object>/<scene>/{annotations.json,images/,depth/,masks/}")
MATCHES_PER_PAIR = 1000  # Probe3D's count
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
STEP_3D = 0.01  # depth in metres: 3-D thresholds 1, 2, 5 cm (Probe3D)


def _quat(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _view(base: Path, rel: str, annotations: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object-to-camera OpenCV 4x4, K, depth with NaN off the object) of one image."""
    image = base / rel
    scene = image.parent.parent
    if scene not in annotations:
        path = need(scene / "annotations.json", LAYOUT)
        try:
            annotations[scene] = {a["filename"]: a for a in json.loads(path.read_text())}
        except (json.JSONDecodeError, KeyError, TypeError):
            raise MTVError(f"{path}: not a NAVI annotations list; {LAYOUT}") from None
    a = annotations[scene].get(image.name)
    if a is None:
        raise SkipSample("no_annotation")
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = _quat(a["camera"]["q"]), a["camera"]["t"]
    h, w = a["image_size"]
    f = float(a["camera"]["focal_length"])
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    raw = read_map(str(scene / "depth" / (image.stem + ".png"))).astype(np.float32)
    mask = read_map(str(scene / "masks" / (image.stem + ".png"))) > 0
    with np.errstate(divide="ignore"):
        depth = np.where((raw > 0) & mask, 655350.0 / raw, np.nan).astype(np.float32)
    if depth.shape != (h, w):
        raise SkipSample("size_mismatch")
    return GL_TO_CV @ pose, K, depth


def load_navi(root: Path, max_samples: int | None = None, seed: int = 0,
              protocols: tuple[str, ...] = (PROBE3D,)) -> Split:
    """NAVI's multiview pairs, scored by Probe3D's protocol unless ``protocols`` names others
    (`mtv.eval.correspondence.GEO_PROTOCOLS`; the first owns the ``corr_geo_recall*`` names)."""
    base = need(root / "navi", LAYOUT)
    rows = limit(lines(base / "custom_splits" / "pairwise_pixel_correspondences" / "pairs-multiview.txt",
                       LAYOUT, 2), max_samples)
    split = Split("navi-multiview", [])
    index: dict[str, int] = {}
    annotations: dict = {}
    pairs = []
    for k, (rel_a, rel_b, *_) in enumerate(rows):
        try:
            pose_a, K_a, d_a = _view(base, rel_a, annotations)
            pose_b, K_b, d_b = _view(base, rel_b, annotations)
        except SkipSample as e:
            split.skipped[f"corr_geo/{e}"] += 1
            continue
        rel = pose_b @ np.linalg.inv(pose_a)
        pa, pb, xyz = gt_matches(d_a, K_a, d_b, K_b, rel, MATCHES_PER_PAIR, np.random.default_rng([seed, k]),
                                 with_xyz=True)
        if len(pa) == 0:
            split.skipped["corr_geo/no_visible_match"] += 1
            continue
        ids = [index.setdefault(str(base / r), len(index)) for r in (rel_a, rel_b)]
        # the depth maps are re-read when scored rather than kept for every pair (NAVI images are large)
        source, target = (lambda r=r: _view(base, r, annotations)[2:0:-1] for r in (rel_a, rel_b))
        pairs.append(Pair(ids[0], ids[1], pa, pb,
                          geo=GeoTruth(xyz, relative_angle(rel), target, STEP_3D, "cm", source, rel)))
    split.images = list(index)
    split.geo_pairs = pairs
    split.geo_protocols = protocols
    return split
