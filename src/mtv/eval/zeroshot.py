"""Zero-shot classification metrics as CLIP_benchmark computes them: pure functions on tensors.

Top-k follows CLIP_benchmark's ``accuracy``: one ``torch.topk`` of the largest ``max(ks)`` scores per row, sorted,
and a row counts at k when its true class is among the first k of them. Equal scores are therefore credited
as ``torch.topk`` orders them (implementation-defined; top-1 is the first of the top-``max(ks)``, which need not
be ``topk(1)``'s pick). Mean per-class recall is scikit-learn's balanced accuracy of the ``argmax`` prediction
(the first of equal maxima), as CLIP_benchmark reports it. A k larger than the number of classes is not defined
and left out (CLIP_benchmark reports it as NaN).
"""

from __future__ import annotations

from importlib import resources
from typing import Sequence

import torch
import torch.nn.functional as F

from mtv.data.shards import DATASET_META

OPENAI_IMAGENET = "openai-imagenet-80"  # the template set of OpenAI's CLIP notebook and CLIP_benchmark's imagenet1k


def openai_imagenet_templates() -> list[str]:
    """OpenAI's 80 ImageNet prompt templates (``{}`` = the class name), shipped as data."""
    return (resources.files("mtv.eval.benchmarks") / "imagenet_templates.txt").read_text().splitlines()


def template_set(meta: dict) -> tuple[list[str], str]:
    """A data set's prompt templates and the name of their set: ``templates`` in its dataset.json, else
    OpenAI's 80 ImageNet templates."""
    if meta.get("templates"):
        return meta["templates"], DATASET_META
    return openai_imagenet_templates(), OPENAI_IMAGENET


def class_prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major (the layout `class_embeddings` expects)."""
    return [t.replace("{}", name) for name in classes for t in templates]


def class_embeddings(prompt_emb: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class text embedding: the normalised mean of its normalised prompt embeddings, (C, D).

    ``prompt_emb`` is (C * T, D) in `class_prompts` order.
    """
    per_class = F.normalize(prompt_emb.float(), dim=-1).reshape(num_classes, -1, prompt_emb.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def defined_ks(num_classes: int, ks: Sequence[int] = (1, 5)) -> list[int]:
    """The ks a top-k accuracy is defined for: at most the number of classes."""
    return [k for k in ks if k <= num_classes]


def undefined_ks(num_classes: int, ks: Sequence[int] = (1, 5)) -> dict[str, str]:
    """``{"top5": why}`` for each k left out of the metrics, the reason a report records."""
    return {f"top{k}": f"not defined with {num_classes} classes (fewer than {k})" for k in ks if k > num_classes}


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": .., "top5": ..}`` for the defined ks: fraction of rows whose true class is among the first k
    of one sorted ``torch.topk(max(ks))``. scores: (N, C)."""
    ks = defined_ks(scores.shape[1], ks)
    if not ks:
        return {}
    best = scores.topk(max(ks), dim=1, largest=True, sorted=True).indices
    hit = best == labels[:, None]
    return {f"top{k}": hit[:, :k].any(dim=1).double().mean().item() for k in ks}


def mean_per_class_recall(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall of the argmax prediction for each class present in ``labels``, averaged over those classes
    (balanced accuracy), so frequent classes do not dominate."""
    hit = (scores.argmax(dim=1) == labels).double()
    return torch.stack([hit[labels == c].mean() for c in labels.unique()]).mean().item()


def zeroshot_accuracy(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor,
                      ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1", "top5", "mean_per_class_recall"}`` for image embeddings (N, D) against class embeddings (C, D);
    a top-k with k above the number of classes is left out."""
    scores = image_emb.float() @ class_emb.float().T
    return {**topk_accuracy(scores, labels, ks), "mean_per_class_recall": mean_per_class_recall(scores, labels)}


def zeroshot_chance(num_classes: int, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """What uniformly random scores achieve on the same keys."""
    return {**{f"top{k}": k / num_classes for k in defined_ks(num_classes, ks)},
            "mean_per_class_recall": 1 / num_classes}
