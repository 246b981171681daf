"""The flags of study/sweep.py, and their checks before anything is read, written or started."""

from __future__ import annotations

import argparse
import math
import os

from sdkd_core.cli import OneLineParser
from sdkd_core.errors import UserError
from study.cluster import split_address
from study.estimate import GPU_TFLOPS
from study.teachers import default_cache_dir

PROG = "sweep.py"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Run a distillation study from a space file.")
    p.add_argument("--space", default=None,
                   help="the study's YAML space file (e.g. ablations.yaml); with --resume it "
                        "may be left out and the run folder's space.yaml is used")
    p.add_argument("--output", default=None,
                   help="run folder (default runs/<space name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in the run folder: finished trials are kept, "
                        "interrupted ones continue from their last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trial plan and the estimated cost; start nothing")
    p.add_argument("--max-trials", type=int, default=None,
                   help="run at most this many trials (baselines first, then drawn trials)")
    p.add_argument("--address", default=None,
                   help="address of a running Ray cluster (e.g. 10.0.0.5:6379); default: "
                        "$RAY_ADDRESS, else start Ray on this machine, on loopback")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs the local Ray may use (default: all)")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs the local Ray may use (default: all visible)")
    p.add_argument("--cache-dir", default=None,
                   help=f"teacher cache (default $SDKD_CACHE or {default_cache_dir()})")
    p.add_argument("--gpu-tflops", type=float, default=GPU_TFLOPS,
                   help=f"effective TFLOP/s of one GPU for --dry-run's estimate "
                        f"(default {GPU_TFLOPS:g})")
    p.add_argument("--mlflow", nargs="?", const="", default=None, metavar="URI",
                   help="track the trials in MLflow (tracking.mlflow): a tracking server's URI, "
                        "or no value for a store inside the run folder")
    p.add_argument("--wandb", nargs="?", const="", default=None, metavar="PROJECT",
                   help="track the trials in Weights & Biases (tracking.wandb), in PROJECT "
                        "(default: the study's name); WANDB_MODE=offline writes them locally")
    p.add_argument("--no-report", action="store_true",
                   help="skip the HTML report at the end (build it later with "
                        "python -m analysis.report <run folder>)")
    return p


def check_flags(args) -> None:
    """Every flag's value, before anything is read, written or started. RAY_ADDRESS, Ray's own
    variable for a cluster to join, stands for --address when the flag is left out."""
    args.address_given = "--address"
    if args.address is None and os.environ.get("RAY_ADDRESS", "").strip():
        args.address = os.environ["RAY_ADDRESS"].strip()
        args.address_given = "RAY_ADDRESS"
    if args.max_trials is not None and args.max_trials < 1:
        raise UserError(f"--max-trials {args.max_trials}: give a positive number")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UserError(f"--num-cpus {args.num_cpus}: give at least 1")
    if args.num_gpus is not None and args.num_gpus < 0:
        raise UserError(f"--num-gpus {args.num_gpus}: give 0 or more")
    if args.address and (args.num_cpus is not None or args.num_gpus is not None):
        given = args.address_given
        raise UserError(f"--num-cpus and --num-gpus size the Ray started here; a cluster "
                        f"({given}) has its own: leave them out"
                        + (", or unset RAY_ADDRESS" if given == "RAY_ADDRESS" else ""))
    if not (math.isfinite(args.gpu_tflops) and args.gpu_tflops > 0):
        raise UserError(f"--gpu-tflops {args.gpu_tflops}: give a positive number like 10")
    if args.address is not None and not args.address.strip():
        raise UserError("--address is empty: give the cluster's HOST:PORT, or leave it out")
    if args.address and args.address != "auto":
        split_address(args.address, args.address_given)
