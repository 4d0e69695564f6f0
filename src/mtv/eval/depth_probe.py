"""Depth probe in the style of Probe3D, scaled down for CPUs: a light head on four frozen intermediate layers
predicts metric depth as the expectation of a distribution over bins, trained with 10 × SigLoss + 0.5 × gradient
loss. Probe3D's head is a DPT of width 512 over 256 bins; here the layers are normalised, concatenated and
projected at the patch grid, refined by one 3×3 conv, and the bin logits upsampled bilinearly — the report
states these choices with the budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtv.eval.metrics import depth_errors, mean_of, scale_shift_fit, valid_depth
from mtv.eval.segmentation import ProbeBudget, fit_probe

SIG_LAMBDA = 0.85


@dataclass(frozen=True)
class DepthProtocol:
    """What a depth number depends on besides the model (docs/EVALUATION.md asks every result to state it)."""

    min_depth: float
    max_depth: float
    crop: str = "none"  # "none", "eigen" (NYUv2), "garg" (KITTI)

    def mask(self, target: torch.Tensor) -> torch.Tensor:
        valid = valid_depth(target, self.min_depth, self.max_depth)
        h, w = target.shape[-2:]
        keep = torch.zeros_like(valid)
        if self.crop == "eigen":  # the 480x640 crop of Eigen et al., scaled to the map
            keep[..., int(45 / 480 * h):int(471 / 480 * h), int(41 / 640 * w):int(601 / 640 * w)] = True
        elif self.crop == "garg":
            keep[..., int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
        else:
            keep[...] = True
        return valid & keep

    def describe(self) -> dict:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth, "crop": self.crop,
                "averaging": "per image", "test_time_augmentation": False}


class DepthProbe(nn.Module):
    def __init__(self, dim: int, num_layers: int, min_depth: float, max_depth: float, width: int = 128,
                 bins: int = 256):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.project = nn.Conv2d(dim * num_layers, width, 1)
        self.refine = nn.Conv2d(width, width, 3, padding=1)
        self.logits = nn.Conv2d(width, bins, 1)
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, bins))

    def forward(self, layers: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """``layers`` (B, L, T, D) → (B, H, W) metric depth at ``size``."""
        x = torch.cat([norm(layers[:, i].float()) for i, norm in enumerate(self.norms)], -1)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        x = self.refine(F.relu(self.project(x)))
        logits = F.interpolate(self.logits(F.relu(x)), size=tuple(size), mode="bilinear", align_corners=False)
        return torch.einsum("bkhw,k->bhw", logits.softmax(1), self.centres)


def sig_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.): sqrt(var(g) + (1 - λ) mean(g)²), g = log pred - log target."""
    g = pred[valid].log() - target[valid].log()
    return (g.var(unbiased=False) + (1 - SIG_LAMBDA) * g.mean() ** 2).clamp_min(1e-12).sqrt()


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal and vertical log-depth gradients, where both pixels are valid."""
    g = torch.where(valid, pred.clamp_min(1e-6).log() - target.nan_to_num(1.0).clamp_min(1e-6).log(), 0)
    terms = []
    for dim in (-1, -2):
        both = valid.narrow(dim, 1, valid.shape[dim] - 1) & valid.narrow(dim, 0, valid.shape[dim] - 1)
        diff = (g.narrow(dim, 1, g.shape[dim] - 1) - g.narrow(dim, 0, g.shape[dim] - 1)).abs()
        if both.any():
            terms.append(diff[both].mean())
    return sum(terms) if terms else pred.sum() * 0.0


def train_depth_probe(layers: torch.Tensor, grid: tuple[int, int], targets: torch.Tensor, protocol: DepthProtocol,
                      budget: ProbeBudget) -> DepthProbe:
    """``layers`` (N, L, T, D) frozen features; ``targets`` (N, H, W) metric depth, NaN invalid, all at one size."""
    torch.manual_seed(budget.seed)
    probe = DepthProbe(layers.shape[-1], layers.shape[1], protocol.min_depth, protocol.max_depth)
    size = tuple(targets.shape[-2:])

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        target = targets[idx]
        valid = protocol.mask(target)
        if valid.sum() < 2:
            return None
        pred = probe(layers[idx], grid, size)
        return 10 * sig_loss(pred, target, valid) + 0.5 * gradient_loss(pred, target, valid)

    return fit_probe(probe, len(layers), budget, batch_loss)


@torch.no_grad()
def evaluate_depth_probe(probe: DepthProbe, layers: torch.Tensor, grid: tuple[int, int],
                         targets: list[torch.Tensor], protocol: DepthProtocol) -> tuple[dict[str, float], int]:
    """`score_depth_maps` of the probe's predictions, each at its target's size."""
    preds = [probe(x[None], grid, tuple(target.shape))[0] for x, target in zip(layers, targets)]
    return score_depth_maps(preds, targets, protocol)


def score_depth_maps(preds: list[torch.Tensor], targets: list[torch.Tensor],
                     protocol: DepthProtocol) -> tuple[dict[str, float], int]:
    """Per-image RMSE, AbsRel, δ1-3, raw and after a least-squares scale-and-shift alignment, averaged over
    images; returns the metrics and the number of images skipped for having no valid pixel."""
    raw, aligned, skipped = [], [], 0
    for pred, target in zip(preds, targets):
        valid = protocol.mask(target)
        errors = depth_errors(pred, target, valid)
        if errors is None:
            skipped += 1
            continue
        raw.append(errors)
        s, t = scale_shift_fit(pred, target, valid)
        aligned.append(depth_errors((s * pred + t).clamp_min(protocol.min_depth), target, valid))
    return {**mean_of(raw), **{f"aligned_{k}": v for k, v in mean_of(aligned).items()}}, skipped
