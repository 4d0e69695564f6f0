"""Zero-shot classification metrics as CLIP_benchmark defines them: pure functions on tensors.

Ties: a prediction counts as correct at k only if fewer than k *other* classes score at least as high as the
true class. Equal scores therefore never earn credit, so a collapsed model (every score equal) scores 0 rather
than an arbitrary value that depends on the sort order.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# CLIP-style prompts for data sets whose dataset.json gives no templates of its own.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a rendering of a {}.",
)


def class_prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major (the layout `class_embeddings` expects)."""
    return [t.replace("{}", name) for name in classes for t in templates]


def class_embeddings(prompt_emb: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class text embedding: the normalised mean of its normalised prompt embeddings, (C, D).

    ``prompt_emb`` is (C * T, D) in `class_prompts` order.
    """
    per_class = F.normalize(prompt_emb.float(), dim=-1).reshape(num_classes, -1, prompt_emb.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def true_class_rank(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's true class, counting every other class with a score >= it as ahead (ties lose)."""
    true = scores.gather(1, labels[:, None])
    return (scores >= true).sum(dim=1) - 1


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": .., "top5": ..}``: fraction of rows whose true class is among the k best. scores: (N, C)."""
    rank = true_class_rank(scores, labels)
    return {f"top{k}": (rank < k).double().mean().item() for k in ks}


def mean_per_class_recall(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 recall of each class present in ``labels``, averaged over those classes (balanced accuracy),
    so frequent classes do not dominate."""
    hit = (true_class_rank(scores, labels) == 0).double()
    present = labels.unique()
    return torch.stack([hit[labels == c].mean() for c in present]).mean().item()


def zeroshot_accuracy(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor,
                      ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1", "top5", "mean_per_class_recall"}`` for image embeddings (N, D) against class embeddings (C, D)."""
    scores = image_emb.float() @ class_emb.float().T
    return {**topk_accuracy(scores, labels, ks), "mean_per_class_recall": mean_per_class_recall(scores, labels)}


def zeroshot_chance(num_classes: int, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """What uniformly random scores achieve on the same keys."""
    return {**{f"top{k}": min(k, num_classes) / num_classes for k in ks}, "mean_per_class_recall": 1 / num_classes}
