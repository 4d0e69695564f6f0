"""Scale-and-shift-invariant depth loss with multi-scale gradient matching (MiDaS, Ranftl et al., 2020).

Pseudo-depth from a relative model has no meaningful scale or shift, so both sides are compared only up to
an affine map, per image and over valid pixels:

- the target is normalised to median 0 and mean absolute deviation 1 (so the loss does not depend on how a
  pseudo-label happened to be scaled);
- the prediction is then aligned to it, either by the least-squares scale and shift (``"lstsq"``, MiDaS) or by
  the same median/MAD normalisation (``"median"``, Depth Anything's form);
- the SSI term is the squared aligned residual summed and divided by 2M (``lstsq``; M valid pixels, MiDaS's
  ``mse_loss``) or the mean absolute one (``median``, Depth Anything); gradient matching penalises the
  residual's finite differences at ``scales`` strides (1, 2, 4, 8), each normalised by its valid pixel count,
  summed over scales. With the 2M, ``grad_weight`` is MiDaS's alpha (0.5 in MiDaS).

Each image with enough valid pixels weighs the same (MiDaS's image-based reduction); images with fewer
contribute nothing.
"""

from __future__ import annotations

import torch

_EPS = 1e-6


def valid_mask(target: torch.Tensor) -> torch.Tensor:
    """Pixels with a usable inverse depth: finite and positive (a stored zero means "no depth")."""
    return torch.isfinite(target) & (target > 0)


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.nanmedian(torch.where(mask, x, float("nan")).flatten(1), dim=1).values


def _median_mad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) values shifted to median 0 and scaled to mean absolute deviation 1 over ``mask``."""
    count = mask.flatten(1).sum(1).clamp_min(1)
    centred = x - _masked_median(x, mask)[:, None, None]
    mad = (centred.abs() * mask).flatten(1).sum(1) / count
    return centred / mad.clamp_min(_EPS)[:, None, None]


def _lstsq_align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``s * pred + t`` with the (s, t) minimising the squared error to ``target`` over ``mask``, per image.

    Centring before solving avoids the cancellation of the normal equations when the prediction carries a large
    shift. A constant prediction gets s = 0 (the best fit is the target's mean)."""
    count = mask.flatten(1).sum(1).clamp_min(1)[:, None, None]
    m = mask.float()
    p_mean = (pred * m).sum((1, 2), keepdim=True) / count
    t_mean = (target * m).sum((1, 2), keepdim=True) / count
    pc = (pred - p_mean) * m
    var = (pc * pc).sum((1, 2), keepdim=True)
    scale = torch.where(var > _EPS, (pc * target).sum((1, 2), keepdim=True) / var.clamp_min(_EPS), 0.0)
    return scale * (pred - p_mean) + t_mean


def align(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
          normalisation: str = "lstsq") -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W) aligned prediction and normalised target; values outside ``mask`` are meaningless but finite."""
    if normalisation not in ("lstsq", "median"):
        raise ValueError(f"depth normalisation must be 'lstsq' or 'median', got {normalisation!r}")
    target = _median_mad(torch.where(mask, target, 0.0), mask)
    if normalisation == "median":
        return _median_mad(pred, mask), target
    return _lstsq_align(pred, target, mask), target


def gradient_matching(residual: torch.Tensor, mask: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """(B,) sum over scales of the mean absolute x/y difference of the residual, where both pixels are valid."""
    total = residual.new_zeros(residual.shape[0])
    for k in range(scales):
        step = 2 ** k
        r, m = residual[:, ::step, ::step], mask[:, ::step, ::step].float()
        mx, my = m[:, :, 1:] * m[:, :, :-1], m[:, 1:, :] * m[:, :-1, :]
        gx = ((r[:, :, 1:] - r[:, :, :-1]).abs() * mx).flatten(1).sum(1)
        gy = ((r[:, 1:, :] - r[:, :-1, :]).abs() * my).flatten(1).sum(1)
        total = total + (gx + gy) / m.flatten(1).sum(1).clamp_min(1)
    return total


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
               normalisation: str = "lstsq", grad_weight: float = 0.5, scales: int = 4,
               min_valid_fraction: float = 0.05, images: torch.Tensor | None = None) -> torch.Tensor:
    """SSI + ``grad_weight`` x gradient matching, averaged over images with at least ``min_valid_fraction`` of
    their pixels valid (and, given ``images`` (B,) bool, only over those marked True).

    ``pred`` and ``target`` are (B, H, W) or (B, 1, H, W) inverse depth; ``mask`` defaults to `valid_mask`
    (target). Computed in fp32. Every image is computed and the mean weighs the used ones, so the shapes never
    depend on the data; an unused image is given a stand-in (every pixel valid, target 1) so that its term, and
    its zero-weighted gradient, stay finite. With no usable image the result is a zero that still depends on
    ``pred``."""
    if pred.dim() == 4:
        pred, target = pred[:, 0], target[:, 0]
        mask = None if mask is None else mask[:, 0]
    pred, target = pred.float(), target.float()
    mask = valid_mask(target) if mask is None else mask & valid_mask(target)
    used = mask.flatten(1).float().mean(1) >= max(min_valid_fraction, _EPS)
    if images is not None:
        used = used & images.bool()
    mask = torch.where(used[:, None, None], mask, True)
    target = torch.where(used[:, None, None], target, 1.0)
    aligned, normed = align(pred, target, mask, normalisation)
    residual = torch.where(mask, aligned - normed, 0.0)
    count = mask.flatten(1).sum(1)
    if normalisation == "median":
        ssi = residual.abs().flatten(1).sum(1) / count
    else:
        ssi = residual.square().flatten(1).sum(1) / (2 * count)
    if grad_weight:
        ssi = ssi + grad_weight * gradient_matching(residual, mask, scales)
    return torch.where(used, ssi, 0.0).sum() / used.sum().clamp_min(1)
