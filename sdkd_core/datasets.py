"""What each dataset is: its shape, normalisation, augmentation and full split sizes.

A table of plain data with no imports of the platform, so the loaders (`sdkd_core.data`), the
generated sets (`sdkd_core.synthetic`) and the cost estimate all read the one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the augmentation need to know about a dataset, and its size."""

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    pad: int  # random-crop padding in pixels (0: no crop)
    flip: bool  # random horizontal flip
    n_train: int  # images of the full training split
    n_test: int  # images of the full test split
    # Datasets of files: their layout (sdkd_core.image_files; a dense task's,
    # sdkd_core.dense_files), None for the others.
    layout: str | None = None
    # Training crop: "pad" (pad by `pad`, random crop at image_size: the CIFAR recipe) or
    # "resized" (RandomResizedCrop(image_size), scale 0.08-1: the ImageNet recipe).
    crop: str = "pad"
    # Evaluation: resize the short side to image_size / eval_crop, then centre-crop image_size
    # (ImageNet's Resize(256) + CenterCrop(224) is 0.875). Files only: tensors are at size.
    eval_crop: float = 1.0
    # What the labels are (a key of sdkd_core.tasks.TASKS): one class per image, or a map per
    # image (segmentation: [H, W] class ids; depth: [H, W] depths, 0 = none).
    task: str = "classification"
    # Dense tasks: the training images' random scale range (joint scale, crop and flip).
    scale: tuple[float, float] = (1.0, 1.0)
    # A generated set made at any `image_size` (multiples of 8 up to its own): a CPU study
    # chooses its cost.
    any_size: bool = False
    # The views' width over their height: image_size is the height (1.0: square views).
    aspect: float = 1.0
    # The classes' names, by index, where the dataset fixes them (figures label with them;
    # a folder's names come from its folders; empty: "class 3").
    class_names: tuple[str, ...] = ()

    @property
    def from_files(self) -> bool:
        return self.layout is not None

    @property
    def dense(self) -> bool:
        """Whether each image's label is a map (segmentation, depth) rather than a class."""
        return self.task != "classification"

    @property
    def view_shape(self) -> tuple[int, int]:
        """(height, width) of every image a batch holds."""
        return self.image_size, round(self.image_size * self.aspect)

    @property
    def augments(self) -> bool:
        return bool(self.pad or self.flip or self.scale != (1.0, 1.0))


FASHION_CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
                      "truck", "bus", "train", "motorcycle", "bicycle")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,), pad=2, flip=True,
                                 n_train=60000, n_test=10000, class_names=FASHION_CLASSES),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           pad=4, flip=True, n_train=50000, n_test=10000,
                           class_names=CIFAR10_CLASSES),
    "cifar100": DatasetInfo(100, 3, 32, CIFAR100_MEAN, CIFAR100_STD, pad=4, flip=True,
                            n_train=50000, n_test=10000),
    # Generated, for tests: 10 classes of noisy smooth templates, 1x28x28.
    "synthetic": DatasetInfo(10, 1, 28, (0.5,), (0.25,), pad=2, flip=True,
                             n_train=2000, n_test=500),
    # Generated in CIFAR-100's shape and size: GPU runs of the CIFAR recipe where the real
    # files cannot be downloaded.
    "synthetic_cifar100": DatasetInfo(100, 3, 32, CIFAR100_MEAN, CIFAR100_STD, pad=4, flip=True,
                                      n_train=50000, n_test=10000),
    # ILSVRC-2012 from its files (streamed): torchvision's recipe and normalisation.
    "imagenet": DatasetInfo(1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, pad=0, flip=True,
                            n_train=1281167, n_test=50000, layout="imagenet", crop="resized",
                            eval_crop=0.875),
    # Tiny-ImageNet (64x64, 100,000 + 10,000 images): small enough for the in-memory path;
    # the CIFAR-style recipe at 64 pixels (pad 8), as Tiny-ImageNet KD papers train it.
    "tiny_imagenet": DatasetInfo(200, 3, 64, IMAGENET_MEAN, IMAGENET_STD, pad=8, flip=True,
                                 n_train=100000, n_test=10000, layout="tiny_imagenet"),
    # A researcher's own class folders: classes and counts come from the files, the size, crop
    # and normalisation from the dataset section (`folder_info`); these are the defaults.
    "imagefolder": DatasetInfo(0, 3, 224, IMAGENET_MEAN, IMAGENET_STD, pad=0, flip=True,
                               n_train=0, n_test=0, layout="imagefolder", crop="resized",
                               eval_crop=0.875),
}
# Fashion-MNIST scenes (sdkd_core.scenes): 2-4 real items on a 64x64 canvas, per-pixel labels.
# Segmentation: background + the 10 classes; depth: one output channel.
SCENES_MEAN, SCENES_STD = (0.1359,), (0.2826,)
DATASET_INFO["fashion_scenes"] = DatasetInfo(
    11, 1, 64, SCENES_MEAN, SCENES_STD, pad=0, flip=True, n_train=10000, n_test=2000,
    task="segmentation", scale=(0.75, 1.25), any_size=True,
    class_names=("background", *FASHION_CLASSES))
DATASET_INFO["fashion_depth"] = DatasetInfo(
    1, 1, 64, SCENES_MEAN, SCENES_STD, pad=0, flip=True, n_train=10000, n_test=2000,
    task="depth", scale=(0.75, 1.25), any_size=True)
# Dense datasets from their files (sdkd_core.dense_files), decoded into memory at image_size
# (the views' height): each image fitted into the view, its map with it, the rest padded.
# Cityscapes: the 19 train ids, val as the test split, CIRKD's scale 0.5-2.0 and flip; views
# 2:1 as its 1024x2048 images. VOC 2012: 21 classes with background, SBD-augmented train
# (train_aug.txt) where present; square views (its images are at most 500 pixels a side).
# NYUv2: BTS's official 795 / 654 split, depth in metres; views 4:3 as its 480x640 images,
# scale 1.0-1.2 with flip (about BTS's 416x544 random crop of 480x640).
DATASET_INFO["cityscapes"] = DatasetInfo(
    19, 3, 256, IMAGENET_MEAN, IMAGENET_STD, pad=0, flip=True, n_train=2975, n_test=500,
    layout="cityscapes", task="segmentation", scale=(0.5, 2.0), aspect=2.0,
    class_names=CITYSCAPES_CLASSES)
DATASET_INFO["voc"] = DatasetInfo(
    21, 3, 256, IMAGENET_MEAN, IMAGENET_STD, pad=0, flip=True, n_train=10582, n_test=1449,
    layout="voc", task="segmentation", scale=(0.5, 2.0), class_names=VOC_CLASSES)
DATASET_INFO["nyuv2"] = DatasetInfo(
    1, 3, 240, IMAGENET_MEAN, IMAGENET_STD, pad=0, flip=True, n_train=795, n_test=654,
    layout="nyuv2", task="depth", scale=(1.0, 1.2), aspect=4 / 3)
DATASETS = tuple(DATASET_INFO)
