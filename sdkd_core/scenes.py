"""Fashion-MNIST scenes: a dense set made of real images, for segmentation and depth on a CPU.

Each scene is a `SIZE` x `SIZE` canvas on which 2 to 4 real Fashion-MNIST items (28 x 28) are
drawn at random places, far to near, so nearer items occlude farther ones:

- the image: the items' pixels, background 0 (1 channel);
- the class map: each item's class + 1 where the item is clearly drawn (intensity > STRONG),
  `IGNORE` on its faint rim (FAINT < intensity <= STRONG: anti-aliased edges, where a
  annotator would not commit either, as Cityscapes leaves object borders void), 0 elsewhere;
- the depth map: each item at its own depth (drawn from DEPTHS, farther first), drawn over a
  background wall that slopes from 10 at the top row to 6 at the bottom, as a floor meets a wall.

Training scenes are made of training items, test scenes of test items, each scene from a
generator seeded by (split, SEED), so every machine makes the same set.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.tasks import IGNORE

SIZE = 64
SEED = 2024
FAINT, STRONG = 10, 50  # uint8 intensities of an item's rim and its body
DEPTHS = (2.0, 8.0)  # items' depths are drawn from this range
WALL = (10.0, 6.0)  # background depth at the top and the bottom row
ITEMS = (2, 4)  # items per scene, inclusive


def make_scenes(items: Tensor, labels: Tensor, n: int, seed: int, size: int = SIZE
                ) -> tuple[Tensor, Tensor, Tensor]:
    """`n` scenes from items [M, 1, 28, 28] (uint8) with classes [M]: images [n, 1, S, S]
    (uint8), class maps [n, S, S] (uint8: 0 background, class + 1, IGNORE) and depth maps
    [n, S, S] (float32)."""
    gen = torch.Generator().manual_seed(seed)
    side = items.shape[-1]
    image = torch.zeros(n, size, size, dtype=torch.uint8)
    classes = torch.zeros(n, size, size, dtype=torch.uint8)
    rows = torch.linspace(WALL[0], WALL[1], size)
    depth = rows.view(1, size, 1).expand(n, size, size).clone()
    count = torch.randint(ITEMS[0], ITEMS[1] + 1, (n,), generator=gen)
    # Farther items first: depths sorted in decreasing order along each scene's slots.
    depths = (DEPTHS[0] + (DEPTHS[1] - DEPTHS[0]) * torch.rand(n, ITEMS[1], generator=gen)
              ).sort(1, descending=True).values
    scene = torch.arange(n).view(n, 1, 1)
    offsets = torch.arange(side)
    for slot in range(ITEMS[1]):
        pick = torch.randint(len(items), (n,), generator=gen)
        top = torch.randint(size - side + 1, (n,), generator=gen)
        left = torch.randint(size - side + 1, (n,), generator=gen)
        r = (top[:, None] + offsets).view(n, side, 1)
        c = (left[:, None] + offsets).view(n, 1, side)
        item = items[pick, 0]
        drawn = (item > FAINT) & (slot < count).view(n, 1, 1)
        body = drawn & (item > STRONG)
        region = (scene, r, c)
        image[region] = torch.where(drawn, item, image[region])
        rim = torch.full_like(item, IGNORE)
        body_class = (labels[pick] + 1).to(torch.uint8).view(n, 1, 1).expand_as(item)
        classes[region] = torch.where(body, body_class, torch.where(drawn, rim, classes[region]))
        depth[region] = torch.where(drawn, depths[:, slot].view(n, 1, 1), depth[region])
    return image[:, None], classes, depth


def fashion_scenes(train_items: Tensor, train_labels: Tensor, test_items: Tensor,
                   test_labels: Tensor, n_train: int, n_test: int, size: int = SIZE):
    """The train and test scenes: (train images, class maps, depth maps, test ...), at
    `size` (the scenes made at SIZE, then shrunk: the same scenes at a lower resolution)."""
    train = make_scenes(train_items, train_labels, n_train, SEED)
    test = make_scenes(test_items, test_labels, n_test, SEED + 1)
    return shrink(train, size), shrink(test, size)


def shrink(scenes: tuple[Tensor, Tensor, Tensor], size: int):
    """Scenes at `size`: images by area averaging, maps by nearest neighbour (no invented
    classes or depths)."""
    image, classes, depth = scenes
    if size == image.shape[-1]:
        return scenes
    image = F.interpolate(image.float(), size=(size, size), mode="area").round().to(torch.uint8)
    classes = F.interpolate(classes[:, None].float(), size=(size, size), mode="nearest")
    depth = F.interpolate(depth[:, None], size=(size, size), mode="nearest")
    return image, classes[:, 0].to(torch.uint8), depth[:, 0]
