"""Write Fashion-MNIST's real images as a folder of JPEG files, in the `imagefolder` layout.

    python study/fashion_folder.py OUT [--train 2000] [--test 500] [--size 32] [--seed 0]

OUT/train/<class>/<n>.jpg and OUT/val/<class>/<n>.jpg: stratified subsets of the real images,
upscaled to --size pixels (bilinear) and saved as 3-channel JPEGs (quality 90). A researcher can
try the image-folder path on it; the tests of the streamed path train on it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from sdkd_core.cli import OneLineParser, run_main
from sdkd_core.data import load_dataset

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot")


def write_fashion_folder(out: str | Path, n_train: int = 2000, n_test: int = 500,
                         size: int = 32, seed: int = 0) -> Path:
    """The folder `out`, written from `n_train` training and `n_test` test images."""
    data = load_dataset("fashion_mnist", n_train=n_train, n_test=n_test, seed=seed)
    out = Path(out)
    for split, x, y in (("train", data.train_x, data.train_y), ("val", data.test_x, data.test_y)):
        for name in CLASSES:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        for n, (img, label) in enumerate(zip(x, y.tolist(), strict=True)):
            gray = Image.fromarray(img[0].numpy()).resize((size, size), Image.BILINEAR)
            gray.convert("RGB").save(out / split / CLASSES[label] / f"{n:05d}.jpg", quality=90)
    return out


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="fashion_folder.py", description=__doc__.splitlines()[0])
    p.add_argument("out", help="the folder to write (train/ and val/ under it)")
    p.add_argument("--train", type=int, default=2000, help="training images (default 2000)")
    p.add_argument("--test", type=int, default=500, help="val images (default 500)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--seed", type=int, default=0, help="which subsets (default 0)")

    def body() -> int:
        args = p.parse_args(argv)
        folder = write_fashion_folder(args.out, args.train, args.test, args.size, args.seed)
        print(f"wrote {args.train} + {args.test} JPEGs to {folder}")
        return 0

    return run_main("fashion_folder.py", body)


if __name__ == "__main__":
    sys.exit(main())
