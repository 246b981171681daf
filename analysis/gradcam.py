"""Where do the networks look? Grad-CAM++ maps and feature similarity of teacher, proxy, students.

    python -m analysis.gradcam runs/<name> [--images 64] [--show 6]

From the run folder: the pretrained teacher (teachers/), the best SDKD trial's proxy teacher and
student, and the student of each baseline on the same pair and seed (final checkpoints in
tune/). On the same N test images (balanced over classes) with the true class as target:

- Grad-CAM++ maps of each network's last stage (the grad-cam package's `GradCAMPlusPlus`);
- the pairwise similarity of the maps, Pearson and cosine per image, mean and std over images;
- linear CKA (Kornblith et al., 2019) of the networks' pooled last-stage features;
- a similarity heatmap and an overlay grid (image | teacher | proxy | SDKD student | ...).

Written under report/gradcam/: similarity.csv, similarity.{png,svg}, overlays.{png,svg}, maps.npz.
"""

from __future__ import annotations

import argparse
import json
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
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from torch import nn  # noqa: E402

from analysis.plots import save  # noqa: E402
from analysis.run import Run, Skipped, load_run, pair_label  # noqa: E402
from analysis.tables import method_label  # noqa: E402
from sdkd_core.data import DATASET_INFO, load_dataset  # noqa: E402
from sdkd_core.distillers import build_distiller  # noqa: E402
from sdkd_core.distillers.base import cam_layer  # noqa: E402
from sdkd_core.distillers.sdkd import ProxyTeacher  # noqa: E402
from sdkd_core.engine import load_checkpoint  # noqa: E402
from sdkd_core.models import StagedNet, build_model  # noqa: E402
from study.cli import OneLineParser, check_analysis_flags, run_main  # noqa: E402
from study.records import atomic_write  # noqa: E402
from study.teachers import file_sha256  # noqa: E402

FASHION_CLASSES = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot")


class Logits(nn.Module):
    """A zoo model seen as grad-cam expects it: images in, logits out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).logits


def target_layer(model: nn.Module) -> nn.Module:
    """The layer whose maps are explained: the network's `cam_layer`, else its last stage."""
    return cam_layer(model)


def cam_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 32) -> np.ndarray:
    """Grad-CAM++ maps [N, H, W] in [0, 1] of `model`'s last stage for the true classes."""
    model = model.eval().requires_grad_(True)  # frozen teachers too: CAM needs their gradients
    maps = []
    with GradCAMPlusPlus(model=Logits(model), target_layers=[target_layer(model)]) as cam:
        for i in range(0, len(images), batch_size):
            targets = [ClassifierOutputTarget(int(y)) for y in labels[i : i + batch_size]]
            maps.append(cam(input_tensor=images[i : i + batch_size], targets=targets))
    return np.concatenate(maps)


def pooled_features(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(images).pooled.double().numpy()


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
    pair: tuple[str, str]
    seed: int
    sdkd_trial: str


def load_teacher(run: Run, arch: str, num_classes: int, in_channels: int) -> StagedNet:
    weights = run.folder.teachers_dir / f"{arch}.pt"
    card_path = weights.with_suffix(".json")
    if not weights.is_file() or not card_path.is_file():
        raise Skipped(f"the run folder keeps no copy of teacher {arch} (teachers/{arch}.pt); "
                      "runs made before teachers were kept cannot show the teacher")
    card = json.loads(card_path.read_text())
    if file_sha256(weights) != card.get("weights_sha256"):
        raise Skipped(f"teachers/{arch}.pt does not match the hash in its card")
    model = build_model(arch, num_classes, in_channels)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def trial_distiller(run: Run, trial_id: str, teacher: StagedNet, info):
    """The trial's method with its final checkpoint loaded, built from its own params.json."""
    params_file = run.folder.trial_dir(trial_id) / "params.json"
    checkpoint = run.checkpoint(trial_id)
    if not params_file.is_file() or checkpoint is None:
        raise Skipped(f"trial {trial_id} left no params.json or checkpoint in "
                      f"{params_file.parent.parent.name}/")
    config = json.loads(params_file.read_text())
    student = build_model(config["student"], info.num_classes, info.in_channels)
    method = build_distiller(config["method"], student, teacher, config["params"])
    method.load_state_dict(load_checkpoint(checkpoint)["method"])
    return method.eval()


def load_networks(run: Run) -> Networks:
    info = DATASET_INFO[run.dataset]
    sdkd = run.completed[run.completed["method"] == "sdkd"]
    if sdkd.empty:
        raise Skipped("no SDKD trial ran all its epochs, so there is no proxy teacher to show")
    best = sdkd.loc[sdkd["test_acc"].idxmax()]
    pair, seed = (best["teacher"], best["student"]), int(best["seed"])
    teacher = load_teacher(run, pair[0], info.num_classes, info.in_channels)
    method = trial_distiller(run, best["trial_id"], teacher, info)
    models: dict[str, nn.Module] = {"teacher": teacher, "proxy teacher": ProxyTeacher(method),
                                    "SDKD student": method.student}
    fixed = run.completed[(run.completed["role"] == "fixed") & (run.completed["method"] != "sdkd")
                          & (run.completed["teacher"] == pair[0])
                          & (run.completed["student"] == pair[1])]
    for name, group in fixed.groupby("method", sort=False):
        same_seed = group[group["seed"] == seed]
        trial = (same_seed if not same_seed.empty else group).iloc[0]["trial_id"]
        models[f"{method_label(name)} student"] = trial_distiller(run, trial, teacher,
                                                                 info).student
    return Networks(models, pair, seed, best["trial_id"])


def test_images(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw uint8, normalised float, labels) of n test images, balanced over the classes."""
    d = run.space["dataset"]
    data = load_dataset(d["name"], d.get("root"), d.get("n_train"), d.get("n_test"),
                        seed=int(run.space["seeds"][0]))
    info = data.info
    picked = []
    by_class = [torch.nonzero(data.test_y == c).flatten().tolist() for c in
                range(info.num_classes)]
    for k in range(len(data.test_y)):
        pool = by_class[k % info.num_classes]
        if k // info.num_classes < len(pool):
            picked.append(pool[k // info.num_classes])
        if len(picked) == n:
            break
    raw = data.test_x[picked]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(info.std).view(1, -1, 1, 1) * 255
    return raw, (raw.float() - mean) / std, data.test_y[picked]


# ----------------------------------------------------------------- figures


def heatmap(sim: pd.DataFrame, title: str, out: Path) -> list[Path]:
    panels = [("pearson_mean", "Grad-CAM++ maps: Pearson r (mean over images)"),
              ("cosine_mean", "Grad-CAM++ maps: cosine (mean over images)"),
              ("cka", "pooled features: linear CKA")]
    names = list(dict.fromkeys(sim["a"]))
    size = 1.0 + 0.75 * len(names)
    fig, axes = plt.subplots(1, 3, figsize=(3 * size + 1.5, size))
    for ax, (column, label) in zip(axes, panels, strict=True):
        matrix = sim.pivot(index="a", columns="b", values=column).loc[names, names]
        # The colour scale starts at 0 (or below, if any value is negative) so differences
        # among similar networks stay visible.
        low = min(0.0, float(np.floor(np.nanmin(matrix.to_numpy()) * 10) / 10))
        sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", vmin=low, vmax=1, cmap="viridis",
                    square=True, annot_kws={"fontsize": 8},
                    cbar_kws={"label": {"pearson_mean": "Pearson r", "cosine_mean": "cosine",
                                        "cka": "linear CKA"}[column], "shrink": 0.8})
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(axis="x", labelrotation=40, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out, "similarity")


def overlay_grid(raw: torch.Tensor, labels: torch.Tensor, maps: dict[str, np.ndarray],
                 class_names, title: str, out: Path) -> list[Path]:
    names = list(maps)
    rows = len(raw)
    fig, axes = plt.subplots(rows, len(names) + 1, squeeze=False, layout="constrained",
                             figsize=(1.45 * (len(names) + 1) + 1, 1.45 * rows + 0.5))
    for r in range(rows):
        image = raw[r].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
        grey = image.shape[-1] == 1
        shown = image[..., 0] if grey else image
        axes[r, 0].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
        axes[r, 0].set_ylabel(class_names[int(labels[r])], fontsize=8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(shown, cmap="gray" if grey else None, vmin=0, vmax=1)
            last = axes[r, c].imshow(maps[name][r], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for c, name in enumerate(["image", *names]):
        axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(last, ax=axes, shrink=0.5, label="Grad-CAM++ for the true class")
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
    maps = {name: cam_maps(model, images, labels) for name, model in nets.models.items()}
    feats = {name: pooled_features(model, images) for name, model in nets.models.items()}
    sim = similarity(maps, feats)
    atomic_write(out / "similarity.csv", lambda tmp: sim.to_csv(tmp, index=False))
    arrays = {"labels": labels.numpy(), **{name.replace(" ", "_"): m for name, m in maps.items()}}
    atomic_write(out / "maps.npz", lambda tmp: _savez(tmp, arrays))
    what = (f"{run.name}: {pair_label(*nets.pair)}, seed {nets.seed}, SDKD trial "
            f"{nets.sdkd_trial}, {len(images)} test images")
    classes = FASHION_CLASSES if run.dataset == "fashion_mnist" else \
        [f"class {i}" for i in range(DATASET_INFO[run.dataset].num_classes)]
    paths = [out / "similarity.csv", out / "maps.npz"]
    paths += heatmap(sim, what, out)
    paths += overlay_grid(raw[:n_show], labels[:n_show], {k: v[:n_show] for k, v in maps.items()},
                          classes, what, out)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m analysis.gradcam", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="the run folder study/sweep.py wrote (runs/<name>)")
    p.add_argument("--images", type=int, default=64,
                   help="test images the similarities average over, at least 2 (default 64)")
    p.add_argument("--show", type=int, default=6,
                   help="images in the overlay grid, 1 to --images (default 6)")
    p.add_argument("--out", default=None,
                   help="output folder, not a file (default <run>/report/gradcam)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        check_analysis_flags(args)
        run = load_run(args.run)
        try:
            paths = write_gradcam(run, Path(args.out) if args.out else None, args.images,
                                  args.show)
        except Skipped as why:
            print(f"analysis.gradcam: nothing to show: {why}", file=sys.stderr)
            return 1
        for path in paths:
            print(path)
        return 0

    return run_main("analysis.gradcam", body)


if __name__ == "__main__":
    sys.exit(main())
