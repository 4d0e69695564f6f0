"""iBOT masked-patch prediction: the student, seeing a mask token, predicts the teacher's target for that patch.

Teacher targets come from `mtv.losses.dino.TeacherCentering` (Sinkhorn–Knopp by default) over the masked tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float = 0.1) -> torch.Tensor:
    """``student_logits``/``teacher_probs`` (M, K) are the masked tokens in ``masks[masks]`` order; ``masks`` (R, N)
    holds every view that could have been masked, masked or not.

    As DINOv2 (``iBOTPatchLoss.forward_masked``): each token weighs 1 / (masked tokens in its image), so every
    masked image counts once whatever its mask ratio, and the sum is divided by R, all the maskable views — the
    term is ``mask_probability`` × the mean over masked images of their mean token cross-entropy. No masked
    image gives 0."""
    per_token = -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)
    counts = masks.sum(1)
    weights = (1.0 / counts.clamp_min(1)).unsqueeze(1).expand_as(masks)[masks]
    return (per_token * weights).sum() / max(len(masks), 1)
