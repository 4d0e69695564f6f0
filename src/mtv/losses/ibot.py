"""iBOT masked-patch prediction: the student, seeing a mask token, predicts the teacher's target for that patch.

Teacher targets come from `mtv.losses.dino.TeacherCentering` (Sinkhorn–Knopp by default) over the masked tokens.
The masked tokens are taken in a fixed number of slots (`masked_tokens`), so no shape depends on the masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_tokens(masks: torch.Tensor, slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-shape stand-in for ``x.flatten(0, 1)[masks.flatten()]``: the flat indices of the masked tokens of
    (R, N) ``masks`` in that order, padded to ``slots`` (at most R N) with unmasked ones, and which are masked."""
    flat = masks.flatten()
    index = torch.argsort((~flat).to(torch.int8), stable=True)[: min(slots, flat.numel())]
    return index, flat[index]


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor, index: torch.Tensor,
              student_temp: float = 0.1) -> torch.Tensor:
    """``student_logits``/``teacher_probs`` (S, K) are the tokens at ``index`` (S,) of `masked_tokens` (``masks``);
    ``masks`` (R, N) holds every view that could have been masked, masked or not.

    As DINOv2 (``iBOTPatchLoss.forward_masked``): each token weighs 1 / (masked tokens in its image), so every
    masked image counts once whatever its mask ratio, and the sum is divided by R, all the maskable views — the
    term is ``mask_probability`` × the mean over masked images of their mean token cross-entropy. No masked
    image gives 0; padding slots weigh 0. More masked tokens than slots make the term NaN (the step is then
    skipped and reported) rather than silently dropping some."""
    per_token = -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)
    flat, counts = masks.flatten(), masks.sum(1)
    weights = torch.where(flat[index], 1.0 / counts.clamp_min(1)[index // masks.shape[1]], 0.0)
    dropped = torch.where(flat.sum() > index.numel(), float("nan"), 0.0)
    return (per_token * weights).sum() / max(len(masks), 1) + dropped
