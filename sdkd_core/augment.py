"""Training augmentation of whole chunks of uint8 images on the device, a draw per image.

`augment_batch` is the CIFAR recipe (pad with the background, random crop, flip) for images
whose label is one class. `joint_augment` is the dense recipe (random scale, crop and flip)
applied identically to an image and its per-pixel target (class map or depth map), as the
segmentation references train (CIRKD: scale 0.5-2.0, crop, flip).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def augment_batch(x: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop (after padding with 0) and horizontal flip, a different one per image."""
    b, _, h, w = x.shape
    dev = x.device
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        # Every crop of every image as a view [B, C, 2p+1, 2p+1, H, W]; pick one per image.
        windows = F.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)
        x = windows[torch.arange(b, device=dev), :, dy, dx]  # 0 is the uint8 background
    else:
        x = x.clone()
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
        x[flipped] = x[flipped].flip(-1)
    return x



def joint_augment(x: Tensor, target: Tensor, scale: tuple[float, float], flip: bool,
                  generator: torch.Generator, fill: float) -> tuple[Tensor, Tensor]:
    """Random scale in `scale`, a random crop (or placement, when zoomed out) of the input's
    size, and a horizontal flip, the same for each image [B, C, H, W] and its target [B, H, W].

    One `affine_grid` per chunk: images resample bilinearly (background 0 outside), targets by
    nearest neighbour (no invented classes or depths) with `fill` outside the image (the
    ignore label, or 0 = no depth). Images come back as float on the uint8 scale.
    """
    b, _, h, w = x.shape
    dev = x.device
    lo, hi = scale
    s = lo + (hi - lo) * torch.rand(b, generator=generator, device=dev)
    # Output -> input coordinates in [-1, 1]: zoom by s, shift within what keeps the crop
    # on the image (s >= 1) or the image inside the crop (s < 1).
    room = (1 - 1 / s).abs()
    tx = (2 * torch.rand(b, generator=generator, device=dev) - 1) * room
    ty = (2 * torch.rand(b, generator=generator, device=dev) - 1) * room
    sign = torch.ones(b, device=dev)
    if flip:
        sign = torch.where(torch.rand(b, generator=generator, device=dev) < 0.5, -sign, sign)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sign / s, tx
    theta[:, 1, 1], theta[:, 1, 2] = 1 / s, ty
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    images = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    # Shifted by one so the zeros grid_sample puts outside the image mark "outside".
    shifted = (target.float() + 1)[:, None]
    sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)[:, 0]
    outside = sampled == 0
    target = (sampled - 1).to(target.dtype).masked_fill(outside, fill)
    return images, target
