"""RefCOCO, RefCOCO+ and RefCOCOg for phrase grounding, in the refer API's layout (lichengunc/refer) under the
benchmarks root: ``<dataset>/refs(<split_by>).p`` (a pickled list of refs with ``ann_id``, ``image_id``, ``split``
and ``sentences[].sent``), ``<dataset>/instances.json`` (COCO ``images`` with ``file_name``, ``annotations`` with
``bbox`` as x, y, w, h) and the images in ``images/mscoco/images/train2014/``.

Every sentence of a ref is one query whose truth is the ref's box. RefCOCO and RefCOCO+ use UNC's splits (val,
testA, testB), RefCOCOg UMD's (val, test), as the refer README recommends. The pickle is read with an unpickler
that builds nothing but lists, dicts, strings and numbers, so a refs file cannot run code.
"""

from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, limit, need

DATASETS = {"refcoco": ("unc", ("val", "testA", "testB")), "refcoco+": ("unc", ("val", "testA", "testB")),
            "refcocog": ("umd", ("val", "test"))}
IMAGES = Path("images") / "mscoco" / "images" / "train2014"
LAYOUT = ("the refer API layout: <root>/<dataset>/refs(unc).p (refcocog: refs(umd).p) and "
          "<root>/<dataset>/instances.json, images in <root>/images/mscoco/images/train2014/")


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refs hold only plain data, not {module}.{name}")


@functools.lru_cache(maxsize=3)
def _read(folder: Path, split_by: str) -> tuple[list, dict[int, str], dict[int, tuple[int, list[float]]]]:
    """The refs, image id -> file name, and annotation id -> (image id, COCO box), read once per data set."""
    refs_path = need(folder / f"refs({split_by}).p", LAYOUT)
    inst_path = need(folder / "instances.json", LAYOUT)
    try:
        with open(refs_path, "rb") as f:
            refs = _PlainUnpickler(f, encoding="utf-8").load()  # the published pickles are Python 2's
        if not isinstance(refs, list):
            raise TypeError("not a list of refs")
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, TypeError, ValueError) as e:
        raise MTVError(f"{refs_path}: not a refer refs pickle ({e}); {LAYOUT}") from None
    try:
        inst = json.loads(inst_path.read_text())
        images = {im["id"]: im["file_name"] for im in inst["images"]}
        anns = {a["id"]: (a["image_id"], [float(v) for v in a["bbox"]]) for a in inst["annotations"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise MTVError(f"{inst_path}: not a COCO instances file ({type(e).__name__}: {e}); {LAYOUT}") from None
    return refs, images, anns


def load_refcoco(root: Path, dataset: str = "refcoco", split: str = "val", max_samples: int | None = None) -> Split:
    """One split as a `Split` of images with their (sentence, xyxy box) queries; ``max_samples`` caps images."""
    split_by, splits = DATASETS[dataset]
    if split not in splits:
        raise MTVError(f"{dataset}: no split {split!r}; choose one of {', '.join(splits)}")
    folder = need(root / dataset, LAYOUT)
    need(root / IMAGES, LAYOUT)
    refs, images, anns = _read(folder, split_by)
    out = Split(f"{dataset}-{split}", [])
    queries: dict[int, list[tuple[str, list[float]]]] = {}
    for ref in refs:
        if not isinstance(ref, dict) or ref.get("split") != split:
            continue
        ann = anns.get(ref.get("ann_id"))
        if ann is None or ann[0] not in images:
            out.skipped["grounding/no_annotation"] += 1
            continue
        x, y, w, h = ann[1]
        sentences = [(s.get("sent") or s.get("raw") or "").strip() for s in ref.get("sentences") or []]
        queries.setdefault(ann[0], []).extend((s, [x, y, x + w, y + h]) for s in sentences if s)
    ids = limit(list(queries), max_samples)
    if not ids:
        raise MTVError(f"{folder / f'refs({split_by}).p'}: no ref with split {split!r} and an annotation in "
                       f"instances.json; {LAYOUT}")
    out.images = [str(root / IMAGES / images[i]) for i in ids]
    out.phrases = [queries[i] for i in ids]
    return out
