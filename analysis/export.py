"""Each method's chosen student out of the platform: a state dict, TorchScript and ONNX, each
beside a model card.

    python study/export.py runs/<name> [--trial ID ...] [--out DIR] [--images 256]

Which students: for every pair and method, the trials the tables choose (analysis/selection.py:
a tuned method's configuration chosen on the validation split, one trial per seed; an untuned
one at its defaults), or the trials named by --trial. Each goes to
<out>/<method>/<teacher>-<student>-s<seed>/ (out: <run>/export):

- student.pt (the state dict, torch.load + `build_model`), student.torchscript.pt (traced),
  student.onnx (opset `OPSET`, a dynamic batch axis): images in, the task's outputs out
  (logits; per-pixel logits or depth maps on a dense task);
- card.json and card.md: the method and its configuration, the teacher, the dataset and its
  preprocessing (x = (pixels / 255 - mean) / std, the input size), the test scores (last and
  best epoch), parameters, MACs, and CPU latency (batch 1) and throughput (batch 64) measured
  on the machine that exported it; the largest difference of TorchScript's and onnxruntime's
  outputs from PyTorch's on the run's test images; the platform's version.
"""

from __future__ import annotations

import json
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.cli import check_analysis_flags
from analysis.images import Logits, test_images
from analysis.run import Run, load_run, method_label, method_order, pair_label
from analysis.selection import chosen_trials, on_pair
from sdkd_core.cli import OneLineParser, run_main
from sdkd_core.cost import Cost, measure
from sdkd_core.errors import UserError
from sdkd_core.files import atomic_write, file_sha256, write_text

OPSET = 18  # the exporter's own: no version conversion
TOLERANCE = 1e-4  # the largest output difference an export may show against PyTorch


def chosen(run: Run, trial_ids: list[str]) -> list[str]:
    """The trials to export: `trial_ids` (each checked), else every method's chosen trials on
    every pair, in the tables' method order."""
    known = set(run.completed["trial_id"])
    if trial_ids:
        for trial in trial_ids:
            if trial not in known:
                every = sorted(set(run.results["trial_id"]))
                hint = ", ".join(every[:5]) + (", ..." if len(every) > 5 else "")
                raise UserError(f"--trial {trial}: no such trial ran all its epochs in "
                                f"{run.root}; its finished trials are listed in results.csv "
                                f"(e.g. {hint})")
        return list(trial_ids)
    out = []
    for teacher, student in run.pairs():
        for method in method_order(set(on_pair(run, teacher, student)["method"])):
            out += chosen_trials(run, method, teacher, student)["trial_id"].tolist()
    return out


COSTS: dict[tuple, Cost] = {}  # (student architecture, input shape) -> its cost here


def max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def export_trial(run: Run, trial_id: str, out: Path, images: torch.Tensor,
                 teachers: dict[str, nn.Module]) -> Path:
    """One student's three files and its cards under `out`; returns card.json's path.
    `teachers` keeps each teacher the trials need, loaded (and its hash checked) once."""
    import onnxruntime  # a second to import: only when a student is exported

    row = run.results.set_index("trial_id").loc[trial_id]
    arch = str(row["teacher"])
    if arch not in teachers:
        teachers[arch] = run.teacher_network(arch)
    method = run.trial_method(trial_id, teachers[arch])
    model = Logits(method.student).eval()
    folder = out / str(row["method"]) / f"{row['teacher']}-{row['student']}-s{int(row['seed'])}"
    folder.mkdir(parents=True, exist_ok=True)
    example = images[:2]
    # torch deprecates TorchScript (FutureWarning on every call) but still reads and writes
    # it; the README says so, and the state dict and ONNX are the formats that last.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        expected = model(images).numpy()
        traced = torch.jit.trace(model, example)
        atomic_write(folder / "student.torchscript.pt",
                     lambda tmp: torch.jit.save(traced, tmp))
    atomic_write(folder / "student.pt",
                 lambda tmp: torch.save(method.student.state_dict(), tmp))
    atomic_write(folder / "student.onnx", lambda tmp: torch.onnx.export(
        model, (example,), str(tmp), input_names=["images"], output_names=["outputs"],
        dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET, verbose=False))
    session = onnxruntime.InferenceSession(str(folder / "student.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        script_out = traced(images).numpy()
    info, task = run.info, run.task
    shape = (info.in_channels, *info.view_shape)
    # A student's cost is its architecture's, whichever method trained it: measured once.
    key = (str(row["student"]), shape)
    if key not in COSTS:
        COSTS[key] = measure(model, shape)
    cost = COSTS[key]
    card = {
        "platform": {"name": "sdkd-study", "version": metadata.version("sdkd-study"),
                     "python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "run": {"name": run.name, "folder": str(run.root), "trial_id": trial_id,
                "role": str(row["role"]), "seed": int(row["seed"])},
        "method": {"name": str(row["method"]), "label": method_label(str(row["method"])),
                   "config": method.config.model_dump(mode="json", by_alias=True)},
        "student": {"arch": str(row["student"])},
        "teacher": {"arch": str(row["teacher"]),
                    **{k: v for k, v in run.teacher_cards.get(str(row["teacher"]), {}).items()
                       if k in (run.score, f"{run.score}_best", "weights_sha256")}},
        "dataset": {"name": run.dataset, "task": task.name, "num_classes": info.num_classes,
                    "class_names": list(run.class_names or info.class_names),
                    "input": [info.in_channels, *info.view_shape],
                    "preprocessing": {"scale": "pixels / 255", "mean": list(info.mean),
                                      "std": list(info.std)}},
        "scores": {task.metric_name: {"last": float(row[run.score]),
                                      "best": float(row[f"{run.score}_best"])},
                   "epochs": int(row["epochs"])},
        "cost": {**cost.row(),
                 "machine": f"{platform.machine()} {platform.processor()}".strip()},
        "checks": {"images": len(images), "torchscript_max_diff": max_difference(
            script_out, expected), "onnx_max_diff": max_difference(onnx_out, expected),
            "tolerance": TOLERANCE},
        "files": {name: file_sha256(folder / name) for name in
                  ("student.pt", "student.torchscript.pt", "student.onnx")},
    }
    worst = max(card["checks"]["onnx_max_diff"], card["checks"]["torchscript_max_diff"])
    if worst > TOLERANCE:
        raise UserError(f"{trial_id}: the exported student's outputs differ from PyTorch's by "
                        f"{worst:.3g} (more than {TOLERANCE}); see {folder / 'card.json'}")
    write_text(folder / "card.json", json.dumps(card, indent=2) + "\n")
    write_text(folder / "card.md", card_markdown(card, run))
    return folder / "card.json"


def card_markdown(card: dict, run: Run) -> str:
    m, d, c, s = card["method"], card["dataset"], card["cost"], card["scores"]
    name, score = next((k, v) for k, v in s.items() if k != "epochs")
    config = ", ".join(f"{k}={v}" for k, v in m["config"].items()) or "its defaults"
    return "\n".join([
        f"# {m['label']} student: {card['student']['arch']} "
        f"({pair_label(card['teacher']['arch'], card['student']['arch'])})",
        "",
        f"- **Method**: {m['label']} ({m['name']}), {card['run']['role']} trial "
        f"{card['run']['trial_id']}, seed {card['run']['seed']}; configuration: {config}.",
        f"- **Teacher**: {card['teacher']['arch']}.",
        f"- **Data**: {d['name']} ({d['task']}, {d['num_classes']} outputs per "
        f"{'pixel' if run.info.dense else 'image'}); input {' x '.join(map(str, d['input']))}, "
        f"x = (pixels / 255 - mean) / std with mean {d['preprocessing']['mean']} and std "
        f"{d['preprocessing']['std']}.",
        f"- **Test {name}**: {score['last']:.{run.task.digits()}f} at the last epoch, "
        f"{score['best']:.{run.task.digits()}f} at the best ({s['epochs']} epochs).",
        f"- **Cost**: {c['params']:,} parameters, {c['macs'] / 1e6:.2f} M MACs per image; on "
        f"{c['machine'] or 'this machine'} ({c['threads']} threads): {c['latency_ms']:.2f} ms "
        f"per image at batch 1, {c['throughput']:.0f} images/s at batch {c['batch']}.",
        f"- **Checks** on {card['checks']['images']} test images: TorchScript differs from "
        f"PyTorch by at most {card['checks']['torchscript_max_diff']:.2g}, onnxruntime by "
        f"{card['checks']['onnx_max_diff']:.2g}.",
        "- **Files**: " + ", ".join(f"`{k}` (SHA-256 {v[:12]}...)" for k, v in
                                      card["files"].items()) + ".",
        f"- **Platform**: sdkd-study {card['platform']['version']}, torch "
        f"{card['platform']['torch']}, onnxruntime {card['platform']['onnxruntime']}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python study/export.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run folder study/sweep.py wrote (runs/<name>)")
    parser.add_argument("--trial", action="append", default=[],
                        help="a trial to export, by its results.csv trial_id (repeat for "
                             "several; default: every method's chosen trials)")
    parser.add_argument("--out", default=None,
                        help="output folder, not a file (default <run>/export)")
    parser.add_argument("--images", type=int, default=256,
                        help="test images the exports are checked on, at least 2 (default 256)")
    args = parser.parse_args(argv)

    def body() -> int:
        check_analysis_flags(args)
        run = load_run(args.run)
        out = Path(args.out) if args.out else run.root / "export"
        trials = chosen(run, args.trial)
        _, images, _ = test_images(run, args.images)
        teachers: dict[str, nn.Module] = {}
        for i, trial in enumerate(trials, start=1):
            print(f"export {i}/{len(trials)}: {trial}", flush=True)
            print(export_trial(run, trial, out, images, teachers), flush=True)
        return 0

    return run_main(parser.prog, body)


if __name__ == "__main__":
    sys.exit(main())
