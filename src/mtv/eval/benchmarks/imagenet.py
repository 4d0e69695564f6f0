"""ImageNet-1k val in class folders (``imagenet/val/<wnid>/*.JPEG``, the layout torchvision's ImageFolder reads):
class i is the i-th wnid in sorted order, named by OpenAI's CLIP class names shipped in ``imagenet_classes.txt``
(the list of OpenAI's ImageNet notebook, also CLIP_benchmark's, kept as published: "sunglasses" names both 836
and 837 and "missile" both 657 and 744; the wnid order is the standard class order, so no wnid table needs
shipping), prompted with OpenAI's 80 templates."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mtv.errors import MTVError
from mtv.eval.benchmarks import Split, image_files, limit, need
from mtv.eval.zeroshot import OPENAI_IMAGENET, openai_imagenet_templates

LAYOUT = "ImageNet-1k val as <root>/imagenet/val/<wnid>/<image> with 1000 class folders"


def class_names() -> list[str]:
    return (resources.files("mtv.eval.benchmarks") / "imagenet_classes.txt").read_text().splitlines()


def load_imagenet(root: Path, max_samples: int | None = None) -> Split:
    val = need(root / "imagenet" / "val", LAYOUT)
    folders = sorted(p for p in val.iterdir() if p.is_dir())
    if len(folders) != 1000:
        raise MTVError(f"{val}: {len(folders)} class folders, expected 1000 ({LAYOUT})")
    items = [(str(f), c) for c, folder in enumerate(folders) for f in image_files(folder)]
    items = limit(items, max_samples)
    return Split("imagenet-val", [p for p, _ in items], labels=[c for _, c in items], classes=class_names(),
                 templates=openai_imagenet_templates(), template_set=OPENAI_IMAGENET)
