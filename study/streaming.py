"""Files streamed into the engine through Ray Data: the batch interface of the in-memory loader.

Each epoch a rank takes its share of the epoch's order (the in-memory loader's: one seeded
permutation per epoch, dealt round-robin to the ranks, equal shares for training), and Ray Data
reads, decodes, crops and flips those files in its CPU workers, wherever in the cluster they
run, `decode_cpus` CPUs a task. Batches reach the trial by `iter_torch_batches` and are
normalised on the trial's device. Every image's view comes from (seed, epoch, index) and Ray Data
keeps the order (`preserve_order`), so a resumed epoch sees the very batches an uninterrupted
one would. Memory holds the file list and the blocks in flight (Ray Data's backpressure), not
the dataset. A file that cannot be decoded is dropped from its batch and counted (`skipped`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from sdkd_core.datasets import DatasetInfo
from sdkd_core.errors import UserError
from sdkd_core.file_data import FileSplits
from sdkd_core.image_files import ImageListing
from sdkd_core.image_views import decode_batch
from sdkd_core.loader import EpochLoader

FILES_PER_TASK = 64  # files a Ray Data task decodes at once
STREAMED_INPUTS = ("index",)


def ensure_ray() -> None:
    """A local Ray for a streamed dataset read outside a sweep's Ray (a teacher trained before
    the trials, `distill.py`): quiet, no dashboard. The sweep shuts it down before it starts
    its own."""
    # Ray (a second to import) loads only when images stream: study.sections imports this
    # module, and a bad space file is refused without Ray.
    import ray
    import ray.data

    # Ray Data's progress bars and per-dataset INFO lines would drown the epochs' lines.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    if not ray.is_initialized():
        # Ray's start-up notices (its token notice, ...) are not this command's output.
        ray_logger = logging.getLogger("ray")
        level = ray_logger.level
        ray_logger.setLevel(logging.ERROR)
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        finally:
            ray_logger.setLevel(level)


class StreamedData:
    """`FileSplits` whose loaders read through Ray Data; otherwise the same as `ImageData`."""

    def __init__(self, splits: FileSplits, decode_cpus: float = 1.0):
        self.splits, self.decode_cpus = splits, decode_cpus
        self.name, self.info = splits.name, splits.info
        self.skipped, self.ignored = 0, splits.ignored

    def __getattr__(self, name: str):  # train_y, test_y, val_y, has_val, num_classes, ...
        if name == "splits":
            raise AttributeError(name)
        return getattr(self.splits, name)

    def loader(self, split: str, **options) -> StreamedLoader:
        listing = {"train": self.splits.train, "val": self.splits.val,
                   "test": self.splits.test}[split]
        return StreamedLoader(listing, self.info, train=split == "train",
                              decode_cpus=self.decode_cpus, **options)


class StreamedLoader(EpochLoader):
    """Batches of (normalised float images, labels) from files, as `BatchLoader` gives them:
    the same order per (seed, epoch, rank), the same batch count."""

    def __init__(self, listing: ImageListing, info: DatasetInfo, batch_size: int,
                 device: torch.device | str = "cpu", decode_cpus: float = 1.0, **options):
        unknown = [k for k in options.get("inputs", ()) if k not in STREAMED_INPUTS]
        if unknown:
            raise UserError(f"a streamed dataset cannot give a method {', '.join(unknown)} "
                            f"(it gives {', '.join(STREAMED_INPUTS)}); hold the dataset in "
                            "memory (dataset.stream: false, crop: pad) for this method")
        super().__init__(len(listing), info, batch_size, device, **options)
        self.listing, self.decode_cpus = listing, decode_cpus
        self.labels = np.asarray(listing.labels, dtype=np.int64)
        self.skipped = 0  # files of this epoch that could not be decoded

    def dataset(self):
        """This epoch's Ray Data pipeline for this rank: file list -> decoded views."""
        import pandas as pd  # as Ray itself: only once images stream (see ensure_ray)
        import ray.data

        ensure_ray()
        idx = self.epoch_indices().numpy()
        table = pd.DataFrame({"path": np.asarray(self.listing.paths, dtype=object)[idx],
                              "label": self.labels[idx], "index": idx.astype(np.int64)})
        # Blocks of a few tasks' files: small enough to spread, large enough to be cheap.
        blocks = max(1, -(-len(idx) // (FILES_PER_TASK * 4)))
        bounds = np.linspace(0, len(table), blocks + 1).astype(int)
        parts = zip(bounds[:-1], bounds[1:], strict=True)
        ds = ray.data.from_pandas([table.iloc[a:b] for a, b in parts])
        ds.context.execution_options.preserve_order = True  # batches independent of timing
        # decode_batch's module imports numpy and PIL, not torch: a decoding worker starts in
        # a fifth of a second.
        return ds.map_batches(
            decode_batch, batch_size=FILES_PER_TASK, batch_format="numpy",
            num_cpus=self.decode_cpus,
            fn_kwargs={"root": self.listing.root, "info": self.info, "train": self.train,
                       "seed": self.seed, "epoch": self.epoch})

    def batches(self) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        """(images, labels, {"index": positions} when asked), batch by batch."""
        self.skipped = 0
        if len(self) == 0:
            return
        for batch in self.dataset().iter_torch_batches(batch_size=self.batch_size,
                                                       drop_last=self.train):
            ok = batch["ok"]
            if not bool(ok.all()):
                self.skipped += int((~ok).sum())
                batch = {k: v[ok] for k, v in batch.items()}
                if len(batch["label"]) == 0:
                    continue
            x = self.normalise(batch["image"].to(self.device, non_blocking=True))
            y = batch["label"].to(self.device)
            extras = {"index": batch["index"].to(self.device)} if "index" in self.inputs else {}
            yield x, y, extras
