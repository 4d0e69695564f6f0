"""Depth probe in the style of Probe3D, scaled down for CPUs: a light head on four frozen intermediate layers
predicts metric depth as the expectation of a distribution over bins, trained with 10 × SigLoss + 0.5 × gradient
loss. As Probe3D (``evals/models/probes.py``, ``evals/utils/losses.py``): 256 bins spaced evenly over the
benchmark's range, normalised "linear" (ReLU + 0.1, divided by the sum); SigLoss and the gradient loss on
log(depth + 1e-3), the gradient loss summed over 4 strides (1, 2, 4, 6) of differences between pixels two
apart, each divided by the valid-pixel count of the batch at that stride. The head is the profile's
(`mtv.eval.profiles`): the CPU profile normalises, concatenates and projects the layers at the patch grid, refines
them by one 3×3 conv and upsamples the bin logits before the normalisation; the probe3d profile is Probe3D's DPT
of width 512 — the report states the profile with the budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtv.eval.metrics import depth_errors, mean_of, scale_shift_fit, valid_depth
from mtv.eval.segmentation import ProbeBudget, fit_probe

SIG_LAMBDA = 0.85
LOG_EPS = 1e-3  # Probe3D's eps inside both losses' logarithms
BIN_FLOOR = 0.1  # Probe3D's "linear" bin normalisation: relu(logit) + 0.1, divided by the sum
GRAD_STRIDES = (1, 2, 4, 6)  # Probe3D's scales: the full map, then every 2nd, 4th and 6th pixel


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


class ConcatHead(nn.Module):
    """The CPU profile's head: LayerNorm per layer, concatenation, a 1x1 conv to ``width``, one 3x3 conv and bin
    logits at the patch grid, upsampled bilinearly to the output size."""

    def __init__(self, dim: int, num_layers: int, width: int, bins: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_layers))
        self.project = nn.Conv2d(dim * num_layers, width, 1)
        self.refine = nn.Conv2d(width, width, 3, padding=1)
        self.logits = nn.Conv2d(width, bins, 1)

    def forward(self, layers: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        x = torch.cat([norm(layers[:, i].float()) for i, norm in enumerate(self.norms)], -1)
        x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        x = self.refine(F.relu(self.project(x)))
        return F.interpolate(self.logits(F.relu(x)), size=tuple(size), mode="bilinear", align_corners=False)


class ResidualConv(nn.Module):
    """x + relu(conv(relu(conv(x)))), both convs ``width`` -> ``width`` with a k x k kernel (DPT's unit)."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(width, width, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.conv2(F.relu(self.conv1(x))))


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class DPTHead(nn.Module):
    """Probe3D's DPT probe (``evals/models/probes.py``), re-implemented: each of the 4 layers projected by a 1x1
    conv to ``width`` and upsampled x2; fused from the deepest: out = unit(layer 4), then out = unit(unit(layer k)
    + out) for k = 3, 2, 1; upsampled x4, a 3x3 conv, ReLU, a 3x3 conv to the bin logits, upsampled x2 (16 x the
    patch grid). Every upsampling is bilinear with aligned corners."""

    def __init__(self, dim: int, width: int = 512, bins: int = 256, kernel: int = 3):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(dim, width, 1) for _ in range(4))
        self.skip = nn.ModuleList(ResidualConv(width, kernel) for _ in range(3))  # layers 1-3 before the sum
        self.fuse = nn.ModuleList(ResidualConv(width, kernel) for _ in range(4))  # after it; the deepest alone
        self.hidden = nn.Conv2d(width, width, 3, padding=1)
        self.logits = nn.Conv2d(width, bins, 3, padding=1)

    def forward(self, layers: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        maps = [_up(proj(layers[:, i].float().transpose(1, 2).reshape(layers.shape[0], -1, *grid)), 2)
                for i, proj in enumerate(self.project)]
        out = self.fuse[3](maps[3])
        for k in (2, 1, 0):
            out = self.fuse[k](self.skip[k](maps[k]) + out)
        return _up(self.logits(F.relu(self.hidden(_up(out, 4)))), 2)


class DepthProbe(nn.Module):
    """Metric depth as the expected bin centre under `linear_bins`. The light head's logits are upsampled before
    the normalisation; the DPT head's depth is computed at its own resolution and upsampled bilinearly with
    aligned corners, as Probe3D's ``train_depth.py``."""

    def __init__(self, dim: int, num_layers: int, min_depth: float, max_depth: float, head: str = "light",
                 width: int = 128, bins: int = 256):
        super().__init__()
        self.head = ConcatHead(dim, num_layers, width, bins) if head == "light" else DPTHead(dim, width, bins)
        self.register_buffer("centres", torch.linspace(min_depth, max_depth, bins))

    def forward(self, layers: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """``layers`` (B, L, T, D) → (B, H, W) metric depth at ``size``."""
        if isinstance(self.head, ConcatHead):
            return torch.einsum("bkhw,k->bhw", linear_bins(self.head(layers, grid, size)), self.centres)
        depth = torch.einsum("bkhw,k->bhw", linear_bins(self.head(layers, grid)), self.centres)
        return F.interpolate(depth[:, None], size=tuple(size), mode="bilinear", align_corners=True)[:, 0]


def linear_bins(logits: torch.Tensor) -> torch.Tensor:
    """Probe3D's (AdaBins') "linear" normalisation of (B, K, H, W) bin logits: ReLU + 0.1, divided by the sum
    over bins, so every bin keeps some mass and the expectation moves with the logits' ratios."""
    weights = F.relu(logits) + BIN_FLOOR
    return weights / weights.sum(1, keepdim=True)


def _log_residual(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, (pred + LOG_EPS).log() - (target.nan_to_num(1.0) + LOG_EPS).log(), 0)


def sig_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.) over every valid pixel of the batch: sqrt(mean(g²) - λ mean(g)²),
    g = log(pred + eps) - log(target + eps)."""
    g = _log_residual(pred, target, valid)[valid]
    return (g.square().mean() - SIG_LAMBDA * g.mean() ** 2).clamp_min(1e-12).sqrt()


def gradient_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Probe3D's (MegaDepth's) gradient loss on the log residual r: at each stride of `GRAD_STRIDES`, |r(p) -
    r(p + 2)| over pairs of valid pixels two apart along each axis, summed over the batch and divided by its
    valid pixels at that stride; summed over strides."""
    r = _log_residual(pred, target, valid)
    total = pred.sum() * 0.0
    for step in GRAD_STRIDES:
        rs, vs = r[..., ::step, ::step], valid[..., ::step, ::step]
        if not vs.any():
            continue
        gy = ((rs[..., 2:, :] - rs[..., :-2, :]).abs() * (vs[..., 2:, :] & vs[..., :-2, :])).sum()
        gx = ((rs[..., :, 2:] - rs[..., :, :-2]).abs() * (vs[..., :, 2:] & vs[..., :, :-2])).sum()
        total = total + (gx + gy) / vs.sum()
    return total


def train_depth_probe(layers: torch.Tensor, grid: tuple[int, int], targets: torch.Tensor, protocol: DepthProtocol,
                      budget: ProbeBudget, head: str = "light", width: int = 128,
                      device: str | torch.device = "cpu") -> DepthProbe:
    """``layers`` (N, L, T, D) frozen features; ``targets`` (N, H, W) metric depth, NaN invalid, all at one size;
    ``head`` and ``width`` come from the probe profile (`mtv.eval.profiles`). Batches move to ``device``; the
    trained probe is returned on the CPU."""
    torch.manual_seed(budget.seed)
    probe = DepthProbe(layers.shape[-1], layers.shape[1], protocol.min_depth, protocol.max_depth, head, width)
    probe.to(device)
    size = tuple(targets.shape[-2:])

    def batch_loss(idx: torch.Tensor) -> torch.Tensor | None:
        target = targets[idx].to(device)
        valid = protocol.mask(target)
        if valid.sum() < 2:
            return None
        pred = probe(layers[idx].to(device), grid, size)
        return 10 * sig_loss(pred, target, valid) + 0.5 * gradient_loss(pred, target, valid)

    return fit_probe(probe, len(layers), budget, batch_loss).cpu()


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
