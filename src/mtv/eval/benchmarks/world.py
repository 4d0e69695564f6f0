"""MTV World shards as evaluation splits: every probe's labels come from the world itself — classes and
captions, semantic maps, metric depth, the second view with ground-truth matches, and phrase boxes."""

from __future__ import annotations

import numpy as np

from mtv.data.schema import decode_caption, decode_json, metric_depth
from mtv.data.shards import ReadStats, dataset_meta, list_shards, read_samples
from mtv.errors import SkipSample
from mtv.eval.benchmarks import Split, read_map
from mtv.eval.correspondence import MTV, PROBE3D, GeoTruth, Pair, gt_matches, object_keypoints, relative_angle
from mtv.eval.depth_probe import DepthProtocol
from mtv.eval.metrics import IGNORE
from mtv.eval.zeroshot import template_set

PROTOCOL = DepthProtocol(min_depth=1e-3, max_depth=30.0)  # the ground ends at radius 20 around the scene
MATCHES_PER_PAIR = 100
MIN_KEYPOINT_PIXELS = 12  # smaller main objects give no distinct keypoints
WORLD_GEO_PROTOCOLS = (MTV, PROBE3D)  # today's corr_geo_recall* first; Probe3D's beside it as corr_geo_p3d_*
# At 64 px with 8-px patches 0.05 of the side is 0.4 patch, finer than nearest neighbour on patch features can
# place a match except by interpolation (Probe3D's 25 px at 512 px is 1.6 patches of a ViT-B/16); at 0.05 an
# untrained and a trained encoder differ by 6 %, at 0.10 (0.8 patch) by 12-16 % (docs/DIAGNOSIS.md round 8).
GEO_HEADLINE = 0.10
STEP_3D = 0.1  # 3-D thresholds 0.1/0.2/0.5 scene units: a view spans ~5 units at the object (NAVI's ~0.5 m)


def _matrix(x, shape: tuple[int, int]) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.shape != shape:
        raise SkipSample("bad_camera")
    return m


def _phrases(info: dict) -> list[tuple[str, list[float]]]:
    """Boxed phrases; a phrase given to two objects of one scene is ambiguous and left out."""
    objs = [(o["phrase"], o["box"]) for o in info.get("objects", []) if o.get("box") and o.get("phrase")]
    counts = {p: sum(q == p for q, _ in objs) for p, _ in objs}
    return [(p, b) for p, b in objs if counts[p] == 1]


def load_world(data: str, name: str, max_samples: int | None = None, seed: int = 0, pairs: bool = False) -> Split:
    """One split of world shards; ``pairs`` adds the geometric (second view) and semantic pairs of a test split."""
    meta = dataset_meta(data)
    classes = meta.get("classes") or []
    labels_names = meta.get("semantic_labels") or []
    stats = ReadStats()
    samples, infos = [], []
    for sample in read_samples(list_shards(data), stats):
        try:
            info = decode_json(sample)
            caption = decode_caption(sample)
        except SkipSample as e:
            stats.skip(str(e))
            continue
        if "png" not in sample:
            stats.skip("no_image")
            continue
        sample["__caption__"] = caption
        samples.append(sample)
        infos.append(info)
        if len(samples) == max_samples:
            break
    index = {c: i for i, c in enumerate(classes)}
    templates, templates_from = template_set(meta)
    split = Split(name=name, images=[s["png"] for s in samples],
                  labels=[index.get(i.get("class"), -1) for i in infos], classes=classes,
                  templates=templates, template_set=templates_from,
                  captions=[[s["__caption__"]] for s in samples],
                  phrases=[_phrases(i) for i in infos], depth_protocol=PROTOCOL,
                  seg_classes=labels_names or None)
    split.skipped.update({k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("skipped/")})

    def seg(i: int) -> np.ndarray:
        if "seg.png" not in samples[i]:
            raise SkipSample("no_seg")
        m = read_map(samples[i]["seg.png"]).astype(np.int64)
        return np.where(m < len(labels_names), m, IGNORE)

    split.seg = seg if labels_names else None
    split.depth = lambda i: metric_depth(samples[i], infos[i])
    if pairs:
        _add_pairs(split, samples, infos, labels_names, seed)
    return split


def _add_pairs(split: Split, samples: list[dict], infos: list[dict], labels_names: list[str], seed: int) -> None:
    partner, geo = [], []
    by_shape: dict[str, list[tuple[int, np.ndarray, list[float]]]] = {}
    for i, (s, info) in enumerate(zip(samples, infos)):
        try:
            if "view2.png" not in s:
                raise SkipSample("no_view2")
            d1, d2 = metric_depth(s, info), metric_depth(s, info, view2=True)
            K2, rel = _matrix(info["view2"]["camera"]["K"], (3, 3)), _matrix(info["view2"]["cam1_to_cam2"], (4, 4))
            pa, pb, xyz = gt_matches(d1, _matrix(info["camera"]["K"], (3, 3)), d2, K2, rel, MATCHES_PER_PAIR,
                                     np.random.default_rng([seed, i]), with_xyz=True)
            if len(pa) == 0:
                raise SkipSample("no_visible_match")
            K1 = _matrix(info["camera"]["K"], (3, 3))
            truth = GeoTruth(xyz, relative_angle(rel), lambda d=d2, k=K2: (d, k), STEP_3D, "x 0.1 scene units",
                             lambda d=d1, k=K1: (d, k), rel)
            geo.append(Pair(i, len(partner), pa, pb, geo=truth))
            partner.append(s["view2.png"])
        except SkipSample as e:
            split.skipped[f"corr_geo/{e}"] += 1
        except (KeyError, TypeError):
            split.skipped["corr_geo/bad_camera"] += 1
        main = info.get("main")
        objs = info.get("objects") or []
        if not isinstance(main, int) or not 0 <= main < len(objs) or not objs[main].get("box") \
                or objs[main].get("shape") not in labels_names or "seg.png" not in s:
            split.skipped["corr_sem/no_main_object"] += 1
            continue
        obj = objs[main]
        x0, y0, x1, y1 = (int(round(v)) for v in obj["box"])
        seg = read_map(s["seg.png"])
        mask = np.zeros(seg.shape, bool)
        mask[y0:y1, x0:x1] = seg[y0:y1, x0:x1] == labels_names.index(obj["shape"])
        kps = object_keypoints(mask) if mask.sum() >= MIN_KEYPOINT_PIXELS else None
        if kps is None:
            split.skipped["corr_sem/small_object"] += 1
            continue
        by_shape.setdefault(obj["shape"], []).append((i, kps, obj["box"]))
    split.geo_pairs = geo
    split.geo_protocols = WORLD_GEO_PROTOCOLS
    split.geo_headline = GEO_HEADLINE
    split.partner = Split(name=f"{split.name}-view2", images=partner)
    split.sem_pairs = [Pair(a[0], b[0], a[1], b[1], category=shape, bbox=tuple(b[2]))
                       for shape, group in sorted(by_shape.items()) for a, b in zip(group[:-1], group[1:])]
