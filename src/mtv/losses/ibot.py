"""iBOT masked-patch prediction: the student, seeing a mask token, predicts the teacher's target for that patch.

Teacher targets come from `mtv.losses.dino.TeacherCentering` (Sinkhorn–Knopp by default) over the masked tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ibot_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor,
              student_temp: float = 0.1) -> torch.Tensor:
    """``student_logits``/``teacher_probs`` (M, K) are the masked tokens in ``masks[masks]`` order; ``masks`` (R, N).

    Each token weighs 1 / (masked tokens in its image), so every masked image counts once whatever its mask ratio;
    the sum is divided by the number of *masked* images: the loss is the mean over masked images of their mean
    token cross-entropy, independent of how many images were masked. (DINOv2 divides by all global crops, masked
    or not, which makes its term `mask_probability` times smaller.) No masked image gives 0."""
    per_token = -(teacher_probs.float() * F.log_softmax(student_logits.float() / student_temp, dim=-1)).sum(-1)
    counts = masks.sum(1)
    weights = (1.0 / counts.clamp_min(1)).unsqueeze(1).expand_as(masks)[masks]
    return (per_token * weights).sum() / (counts > 0).sum().clamp_min(1)
