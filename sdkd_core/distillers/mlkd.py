"""MLKD (Jin et al., CVPR 2023, "Multi-Level Logit Distillation"): instance-, batch- and
class-level alignment of softmax predictions at five temperatures, on a weakly and a strongly
augmented view of each image.

What Jin-Ying/Multi-Level-Logit-Distillation computes (mdistiller/distillers/KD_ours.py
`forward_train`, the "ours" trainer, RandAugment(2, 10) for the strong view), quirks included.
With P^T = softmax(z / T), T in {T0, 3, 5, 2, 6} (T0 = `mlkd.temperature`), w = weak, s = strong:

    m   = fraction of the batch whose teacher confidence max_c softmax(z_t^w) <= its median
    m_c = fraction of the classes whose summed teacher probability sum_i softmax(z_t^w) <= its
          median  (medians as np.percentile(., 50), here torch.quantile: the same linear rule)
    ce        = ce_weight * (CE(z_s^w, y) + CE(z_s^s, y))
    kd_weak   = kd_weight * m * sum_T KD_T(z_s^w, z_t^w)
    kd_strong = kd_weight * (sum_{T0,3,5} KD_T(z_s^s, z_t^s) + sum_{2,6} KD_T(z_s^w, z_t^w))
    cc        = kd_weight * m_c * sum_T |P_t^T' P_t^T - P_s^T' P_s^T|^2 / C    (weak view)
    bc        = kd_weight * m   * sum_T |P_t^T P_t^T' - P_s^T P_s^T'|^2 / B    (weak view)

KD_T is Hinton's T^2 * KL, batch mean. The masks multiply losses already averaged over the
batch, so they only scale them by m or m_c (about 1/2). The reference also computes strong-view
class and batch terms but never returns them; they are left out here (no effect on training).

`mlkd.logit_standardize` is Sun et al.'s MLKD+LS (CVPR 2024, sunshangquan/logit-
standardization-KD mdistiller/distillers/MLKD.py): the Z-score on both logits inside every KD
term only; the masks, cc and bc stay on raw logits. Their recipe also sets T0 2, kd_weight 9
(6 for vgg13->vgg8 and resnet32x4->ShuffleV2), ce_weight 0.1: set those too.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import kd_loss, zscore_logits

# The temperatures after `mlkd.temperature`, hard-coded in the reference's forward_train.
OTHER_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
# How many of the five the strong-view KD sum takes on the strong logits; the reference takes
# the last two on the weak ones.
STRONG_KD_TEMPERATURES = 3


class MLKDConfig(MethodConfig):
    ce_weight: float = Field(0.1, ge=0)  # mdistiller/engine/cfg.py CFG.KD.LOSS.CE_WEIGHT
    kd_weight: float = Field(0.9, ge=0)  # CFG.KD.LOSS.KD_WEIGHT (ImageNet kd_ours.yaml: 0.5, 0.5)
    temperature: float = Field(4.0, gt=0)  # CFG.KD.TEMPERATURE, the first of five (ImageNet: 1)
    strong_augment: bool = True  # the "ours" trainer's RandAugment view; false: the weak one
    logit_standardize: bool = False  # MLKD+LS (Sun et al.): Z-score inside the KD terms


def below_median_fraction(values: Tensor) -> Tensor:
    """The fraction of `values` at or below their median, the median computed as numpy's
    default np.percentile(values, 50) (linear interpolation, which torch.quantile shares)."""
    return (values <= torch.quantile(values, 0.5)).float().mean()


def batch_relation(p_s: Tensor, p_t: Tensor) -> Tensor:
    """Squared distance of the B x B Gram matrices of the predictions, over B."""
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / p_s.shape[0]


def class_relation(p_s: Tensor, p_t: Tensor) -> Tensor:
    """Squared distance of the C x C Gram matrices of the predictions, over C."""
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / p_s.shape[1]


def mlkd_terms(s_weak: Tensor, s_strong: Tensor, t_weak: Tensor, t_strong: Tensor,
               target: Tensor, config: MLKDConfig) -> dict[str, Tensor]:
    """MLKD's weighted loss terms from the four logits (see the module docstring)."""
    c = config
    s_weak, s_strong, t_weak, t_strong = (z.float() for z in (s_weak, s_strong, t_weak, t_strong))
    temps = (c.temperature, *OTHER_TEMPERATURES)
    with torch.no_grad():
        p_t = F.softmax(t_weak, dim=1)
        sample_fraction = below_median_fraction(p_t.max(1).values)
        class_fraction = below_median_fraction(p_t.sum(0))

    def kd(s: Tensor, t: Tensor, temp: float) -> Tensor:
        if c.logit_standardize:
            s, t = zscore_logits(s), zscore_logits(t)
        return kd_loss(s, t, temp)

    bc, cc = 0.0, 0.0
    for temp in temps:  # batch and class levels: the weak view only
        p_s, p_t = F.softmax(s_weak / temp, dim=1), F.softmax(t_weak / temp, dim=1)
        bc = bc + batch_relation(p_s, p_t)
        cc = cc + class_relation(p_s, p_t)
    strong = [(s_strong, t_strong)] * STRONG_KD_TEMPERATURES
    strong += [(s_weak, t_weak)] * (len(temps) - STRONG_KD_TEMPERATURES)
    return {
        "ce": c.ce_weight * (F.cross_entropy(s_weak, target) + F.cross_entropy(s_strong, target)),
        "kd_weak": c.kd_weight * sample_fraction * sum(kd(s_weak, t_weak, t) for t in temps),
        "kd_strong": c.kd_weight * sum(kd(s, t, temp)
                                       for (s, t), temp in zip(strong, temps, strict=True)),
        "cc": c.kd_weight * class_fraction * cc,
        "bc": c.kd_weight * sample_fraction * bc,
    }


class MLKD(Distiller):
    name = "mlkd"
    label = "MLKD"
    Config = MLKDConfig
    # The class asks for the strong view (the contract check reads this); an instance with
    # strong_augment off asks for nothing (the engine reads the instance).
    batch_inputs: ClassVar[tuple[str, ...]] = ("strong_view",)

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        if not self.config.strong_augment:
            self.batch_inputs = ()

    def forward(self, x, y, epoch, strong_view=None):
        # The student sees the weak view, then the strong one, as in the reference (BatchNorm
        # statistics update in that order). Without a strong view both views are the weak one,
        # and one pass serves both.
        z_s = self.student(x).logits
        z_t = self.teacher_output(x).logits
        if strong_view is None:
            return z_s, mlkd_terms(z_s, z_s, z_t, z_t, y, self.config)
        z_s_strong = self.student(strong_view).logits
        z_t_strong = self.teacher_output(strong_view).logits
        return z_s, mlkd_terms(z_s, z_s_strong, z_t, z_t_strong, y, self.config)
