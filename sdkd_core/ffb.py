"""The Feature Fusion Block: student and teacher stage maps in, a student-shaped map out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdkd_core.losses import resize_to
from sdkd_core.models.base import conv_bn


class FeatureFusionBlock(nn.Module):
    """`depth` conv3x3-BN-ReLU blocks over [student map, teacher map resized to it].

    The first block maps C_s + C_t -> C_out, the rest C_out -> C_out; C_out defaults to C_s so
    the output can replace the student's own stage map. With teacher_channels=0 the block sees
    the student map alone (the `use_teacher_feats: false` ablation).
    """

    def __init__(self, student_channels: int, teacher_channels: int, depth: int = 1,
                 out_channels: int | None = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"ffb_depth={depth} must be at least 1")
        out = out_channels or student_channels
        self.uses_teacher = teacher_channels > 0
        self.blocks = nn.Sequential(
            nn.Sequential(*conv_bn(student_channels + teacher_channels, out, 3)),
            *(nn.Sequential(*conv_bn(out, out, 3)) for _ in range(depth - 1)),
        )

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def forward(self, student_map: Tensor, teacher_map: Tensor | None = None,
                size: tuple[int, int] | None = None) -> Tensor:
        """Fuse at `size` (default: the student map's spatial size)."""
        size = size or tuple(student_map.shape[-2:])
        parts = [resize_to(student_map, size)]
        if self.uses_teacher:
            if teacher_map is None:
                raise ValueError("this FFB was built for teacher features; pass teacher_map")
            parts.append(resize_to(teacher_map.to(student_map.dtype), size))
        return self.blocks(torch.cat(parts, dim=1))
