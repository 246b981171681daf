"""Where do the networks look? Grad-CAM++ maps and feature similarity of teacher and students.

    python -m analysis.gradcam runs/<name> [--images 64] [--show 6]

From the run folder: the pretrained teacher (teachers/), the chosen trial of the run's method
(`search.method`): each extra network it trains (its `heads`, e.g. a proxy teacher) and its
student, and the student of each other method on the same pair and seed (final checkpoints in
tune/); every method as the tables choose it (analysis/selection.py, never by test accuracy).
On the same N test images (balanced over classes; a dense task's first N) with the task's
target (`Task.explains`: the true class's logit; on segmentation the image's largest labelled
class other than class 0, its logits summed over its true mask; on depth the mean predicted
depth over the pixels with a true depth):

- Grad-CAM++ maps of each network's last stage (the grad-cam package's `GradCAMPlusPlus`);
- the pairwise similarity of the maps, Pearson and cosine per image, mean and std over images;
- linear CKA (Kornblith et al., 2019) of the networks' pooled last-stage features;
- a similarity heatmap and an overlay grid (image | teacher | heads | student | baselines).

Written under report/gradcam/: similarity.csv, similarity.{png,svg}, overlays.{png,svg}, maps.npz.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from pytorch_grad_cam import GradCAMPlusPlus  # noqa: E402
from torch import nn  # noqa: E402

from analysis.cli import analysis_main  # noqa: E402
from analysis.images import Logits, test_images  # noqa: E402
from analysis.plots import save  # noqa: E402
from analysis.run import Run, Skipped, method_label, method_order, pair_label  # noqa: E402
from analysis.selection import chosen_trials, on_pair, selection_metric  # noqa: E402
from sdkd_core.datasets import DATASET_INFO  # noqa: E402
from sdkd_core.distillers.base import cam_layer  # noqa: E402
from sdkd_core.files import atomic_write  # noqa: E402
from sdkd_core.tasks import TASKS, Task  # noqa: E402


class Explained:
    """A grad-cam target: the task's scalar for one image (`Task.explained`)."""

    def __init__(self, task: Task, target: torch.Tensor):
        self.task, self.target = task, target

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return self.task.explained(output, self.target.to(output.device))


def cam_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 32, task: Task = TASKS["classification"]) -> np.ndarray:
    """Grad-CAM++ maps [N, H, W] in [0, 1] of `model`'s `cam_layer` (else its last stage) for
    the task's target of each image (the true class on classification)."""
    model = model.eval().requires_grad_(True)  # frozen teachers too: CAM needs their gradients
    maps = []
    with GradCAMPlusPlus(model=Logits(model), target_layers=[cam_layer(model)]) as cam:
        for i in range(0, len(images), batch_size):
            targets = [Explained(task, y) for y in labels[i : i + batch_size]]
            maps.append(cam(input_tensor=images[i : i + batch_size], targets=targets))
    return np.concatenate(maps)


def pooled_features(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """The network's pooled features; for a head that returns only logits, its `cam_layer`'s
    activations averaged over space."""
    seen = []
    hook = cam_layer(model).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            out = model.eval()(images)
    finally:
        hook.remove()
    pooled = out.pooled if hasattr(out, "pooled") else seen[-1].mean(dim=(2, 3))
    return pooled.flatten(1).double().numpy()


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature matrices [N, D1], [N, D2] over the same N inputs."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    cross = np.linalg.norm(y.T @ x) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Pearson and cosine of two map stacks [N, H, W] (NaN where undefined)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        pearson = (ac * bc).sum(1) / (np.linalg.norm(ac, axis=1) * np.linalg.norm(bc, axis=1))
    return np.clip(pearson, -1, 1), np.clip(cos, -1, 1)


def similarity(maps: dict[str, np.ndarray], feats: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long form, every ordered pair of networks: Pearson/cosine mean and std, linear CKA."""
    rows = []
    names = list(maps)
    for a in names:
        for b in names:
            pearson, cos = map_similarity(maps[a], maps[b])
            rows.append({"a": a, "b": b,
                         "pearson_mean": np.nanmean(pearson), "pearson_std": np.nanstd(pearson),
                         "cosine_mean": np.nanmean(cos), "cosine_std": np.nanstd(cos),
                         "cka": linear_cka(feats[a], feats[b]),
                         "images": int(np.isfinite(pearson).sum())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- networks from the run folder


@dataclass
class Networks:
    models: dict[str, nn.Module]  # display name -> network, in display order
    best: pd.Series  # the results.csv row of the best trial of the run's method


def load_networks(run: Run, seed: int | None = None) -> Networks:
    """The teacher, then the heads and the student of the run's method, then the student of
    each other method on the same pair and seed: each method as the tables choose it (tuned
    by validation accuracy where the run tuned it, else at its defaults). The pair is the one
    where the run's method chose best; the seed, `seed` or the first one it ran."""
    candidates = [(t, s, chosen_trials(run, run.method, t, s)) for t, s in run.pairs()]
    candidates = [c for c in candidates if not c[2].empty]
    if not candidates:
        raise Skipped(f"no {run.label} trial ran all its epochs, so there is no trained "
                      f"{run.label} network to show")
    sign = run.task.sign()
    teacher_arch, student_arch, mine = max(
        candidates, key=lambda c: sign * c[2][selection_metric(c[2], run.score, run.task)].mean())
    mine = mine.sort_values("seed", kind="stable")
    best = mine[mine["seed"] == seed].iloc[0] if seed in set(mine["seed"]) else mine.iloc[0]
    teacher = run.teacher_network(teacher_arch)
    method = run.trial_method(best["trial_id"], teacher)
    models: dict[str, nn.Module] = {"teacher": teacher}
    models.update({name: method.extra_network(key) for key, name in method.heads.items()})
    models[f"{run.label} student"] = method.student
    others = set(on_pair(run, teacher_arch, student_arch)["method"]) - {run.method}
    for name in method_order(others):
        trials = chosen_trials(run, name, teacher_arch, student_arch)
        same_seed = trials[trials["seed"] == best["seed"]]
        if same_seed.empty:
            continue  # a seed this method did not run (or did not finish) on
        models[f"{method_label(name)} student"] = run.trial_method(
            same_seed.iloc[0]["trial_id"], teacher).student
    return Networks(models, best)


# ----------------------------------------------------------------- figures


def heatmap(sim: pd.DataFrame, title: str, out: Path) -> list[Path]:
    panels = [("pearson_mean", "Grad-CAM++ maps: Pearson r (mean over images)", "Pearson r"),
              ("cosine_mean", "Grad-CAM++ maps: cosine (mean over images)", "cosine"),
              ("cka", "pooled features: linear CKA", "linear CKA")]
    names = list(dict.fromkeys(sim["a"]))
    size = 1.0 + 0.75 * len(names)
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 1.5, size))
    for ax, (column, label, unit) in zip(axes, panels, strict=True):
        matrix = sim.pivot(index="a", columns="b", values=column).loc[names, names]
        # The colour scale starts at 0 (or below, if any value is negative) so differences
        # among similar networks stay visible.
        low = min(0.0, float(np.floor(np.nanmin(matrix.to_numpy()) * 10) / 10))
        sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", vmin=low, vmax=1, cmap="viridis",
                    square=True, annot_kws={"fontsize": 8},
                    cbar_kws={"label": unit, "shrink": 0.8})
        ax.set_title(label, fontsize=9)
        ax.set(xlabel="", ylabel="")
        ax.tick_params(axis="x", labelrotation=40, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
        plt.setp(ax.get_xticklabels(), horizontalalignment="right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out, "similarity")


def overlay_grid(raw: torch.Tensor, labels: torch.Tensor, maps: dict[str, np.ndarray],
                 class_names, title: str, out: Path,
                 task: Task = TASKS["classification"]) -> list[Path]:
    names = list(maps)
    rows = len(raw)
    fig, axes = plt.subplots(rows, len(names) + 1, squeeze=False, layout="constrained",
                             figsize=(1.45 * (len(names) + 1) + 1, 1.45 * rows + 0.5))
    for r in range(rows):
        image = raw[r].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
        grey = image.shape[-1] == 1
        shown = image[..., 0] if grey else image
        axes[r, 0].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
        explained = task.explained_class(labels[r])
        axes[r, 0].set_ylabel(task.metric_name if explained is None else
                              class_names[explained], fontsize=8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
            last = axes[r, c].imshow(maps[name][r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    for c, name in enumerate(["image", *names]):
        axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(last, ax=axes, shrink=0.5, label="Grad-CAM++ of the row's target")
    return save(fig, out, "overlays")


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: numpy adds no .npz to the temporary name
        np.savez_compressed(f, **arrays)


def write_gradcam(run: Run, out: Path | None = None, n_images: int = 64,
                  n_show: int = 6) -> list[Path]:
    out = out or run.folder.report_dir / "gradcam"
    out.mkdir(parents=True, exist_ok=True)
    nets = load_networks(run)
    raw, images, labels = test_images(run, n_images)
    maps = {name: cam_maps(model, images, labels, task=run.task)
            for name, model in nets.models.items()}
    feats = {name: pooled_features(model, images) for name, model in nets.models.items()}
    sim = similarity(maps, feats)
    atomic_write(out / "similarity.csv", lambda tmp: sim.to_csv(tmp, index=False))
    arrays = {"labels": labels.numpy(), **{name.replace(" ", "_"): m for name, m in maps.items()}}
    atomic_write(out / "maps.npz", lambda tmp: _savez(tmp, arrays))
    best = nets.best
    what = (f"{run.name}: {pair_label(best['teacher'], best['student'])}, seed {best['seed']}, "
            f"{run.label} trial {best['trial_id']}, {len(images)} test images")
    # Runs recorded before DatasetInfo kept class names: the table's, for the same dataset.
    classes = run.class_names or run.info.class_names or \
        DATASET_INFO.get(run.dataset, run.info).class_names or \
        [f"class {i}" for i in range(run.info.num_classes)]
    paths = [out / "similarity.csv", out / "maps.npz"]
    paths += heatmap(sim, what, out)
    paths += overlay_grid(raw[:n_show], labels[:n_show], {k: v[:n_show] for k, v in maps.items()},
                          classes, what, out, run.task)
    return paths


def main(argv: list[str] | None = None) -> int:
    return analysis_main(argv, _print_gradcam, "analysis.gradcam", __doc__,
                         images="the similarities", show=True, out="gradcam")


def _print_gradcam(run: Run, args) -> list[Path]:
    return write_gradcam(run, args.out, args.images, args.show)


if __name__ == "__main__":
    sys.exit(main())
