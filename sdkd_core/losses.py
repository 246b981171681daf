"""Distillation losses as pure functions of tensors. All return a scalar averaged over the batch."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton's KD: T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean over the batch.

    The second argument is the target; pass it detached when it should not learn from this term.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> Tensor:
    """Decoupled KD (Zhao et al., 2022): alpha * TCKD + beta * NCKD, each scaled by T^2.

    TCKD is the KL between the binary (target, all others) probabilities of teacher and student;
    NCKD is the KL between their distributions over the non-target classes only.
    """
    t = temperature
    s, te = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(target, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, dim=1), F.softmax(te, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
    tckd = F.kl_div(b_s.clamp_min(1e-12).log(), b_t, reduction="batchmean")
    # Removing the target class from the softmax = giving it a very negative logit.
    log_q_s = F.log_softmax(s - 1000.0 * gt, dim=1)
    log_q_t = F.log_softmax(te - 1000.0 * gt, dim=1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).masked_fill(gt, 0).sum(1).mean()
    return (alpha * tckd + beta * nckd) * t * t


def layer_norm_logits(logits: Tensor, scale: float = 3.1415, eps: float = 1e-7) -> Tensor:
    """SHAKE's logit standardisation (lliai/SHAKE, shake/helper/loops.py): a layer norm over the
    classes without affine parameters (biased variance, eps inside the root), times `scale`."""
    z = logits.float()
    return F.layer_norm(z, z.shape[-1:], eps=eps) * scale


def zscore_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Sun et al.'s Z-score (CVPR 2024, `normalize` in their KD.py): (z - mean) / (std + eps)
    over the classes, with the unbiased std torch.std gives."""
    z = logits.float()
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def shake_terms(student: Tensor, teacher: Tensor, shadow: Tensor, target: Tensor,
                temperature: float = 4.0) -> dict[str, Tensor]:
    """SHAKE's unweighted loss terms on (already standardised) logits, detached as the reference
    does: the student learns from `ce`, `kd` and `student_from_shadow`, the shadow head from
    `shadow_from_student`, `shadow_ce` and `shadow_mse`; the teacher from none."""
    t = temperature
    return {
        "ce": F.cross_entropy(student.float(), target),
        "kd": kd_loss(student, teacher.detach(), t),
        "student_from_shadow": kd_loss(student, shadow.detach(), t),
        "shadow_from_student": kd_loss(shadow, student.detach(), t),
        "shadow_ce": F.cross_entropy(shadow.float(), target),
        "shadow_mse": F.mse_loss(shadow.float(), teacher.detach().float()),
    }


def feature_l1(student_map: Tensor, target_map: Tensor) -> Tensor:
    """Mean absolute difference between two feature maps of one shape."""
    return F.l1_loss(student_map.float(), target_map.float())


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a feature map: average-pool when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def attention_map(feat: Tensor, p: int = 2) -> Tensor:
    """Zagoruyko & Komodakis' spatial attention: normalise(mean_c |f|^p), flattened."""
    return F.normalize(feat.float().abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_map: Tensor, teacher_map: Tensor, p: int = 2) -> Tensor:
    """Attention transfer between two stage maps (teacher resized to the student's size)."""
    teacher_map = resize_to(teacher_map, tuple(student_map.shape[-2:]))
    return (attention_map(student_map, p) - attention_map(teacher_map, p)).pow(2).mean()
