"""results.csv and epochs.csv, rebuilt from the trials' own records: configs (params.json in
tune/ and confirm/), histories (history/) and ends (ended/)."""

from __future__ import annotations

import contextlib
import json
import math
from typing import NamedTuple

from sdkd_core.files import write_csv
from sdkd_core.tasks import task_of
from study.runfolder import IDENTITY, RunFolder, is_diverged


def trial_records(folder: RunFolder, configs: dict[str, dict] | None = None):
    """{trial name: (config, finished epochs in order)} of every trial the run has started.

    `configs` are the live trials' configs, for a trial whose params.json Tune has not
    written yet.
    """
    configs = dict(configs or {})
    for experiment in (folder.tune_dir, folder.confirm_dir):
        for params in sorted(experiment.glob("*/params.json")):
            with contextlib.suppress(json.JSONDecodeError):  # being written right now
                config = json.loads(params.read_text())
                configs.setdefault(config["trial_name"], config)
    return {name: (config, folder.history(name)) for name, config in configs.items()}


def build_tables(records, ends: dict[str, dict], live: dict[str, str] | None = None,
                 errors=()):
    """(results rows, epochs rows) from `trial_records` and the trials' end records.

    A trial's status is its end record (`completed`, `stopped`, `diverged`) when it has one;
    else `error` (in `errors`), `running` (Tune's live state in `live`), `interrupted` (some
    epochs) or `pending`.
    """
    live = live or {}
    results_rows, epoch_rows = [], []
    # Every sampled parameter is a column of every row, right after the identity.
    param_keys = list(dict.fromkeys(k for config, _ in records.values()
                                    for k in config.get("params", {})))
    rows_seen = [r for _, history in records.values() for r in history]
    task = task_of(rows_seen[0]) if rows_seen else task_of({})
    metric = task.metric
    # With a validation split every trial reports val_<metric>: a column of every row.
    validated = any(f"val_{metric}" in r for r in rows_seen)
    scores = [*task.metric_labels, f"{metric}_best"]  # acc, top5, acc_best; miou, ...
    for name, (config, results) in records.items():
        end = ends.get(name)
        # A trial stopped by ASHA may have trained on while being stopped: its record ends
        # at the epoch ASHA judged.
        last_epoch = int(end["epoch"]) if end and end["how"] == "stopped" else None
        identity = {"trial_id": name, **{k: config[k] for k in IDENTITY[1:]},
                    **{k: config["params"].get(k, "") for k in param_keys}}
        rows = [{**identity, **r} for r in results
                if last_epoch is None or int(r["epoch"]) <= last_epoch]
        epoch_rows.extend(rows)
        last = rows[-1] if rows else {}
        done = len(rows)
        diverged = end if end and is_diverged(end) else None
        if end:
            status = end["how"]
        elif name in errors:
            status = "error"
        elif live.get(name) == "RUNNING":
            status = "running"
        else:
            status = "interrupted" if done else "pending"
        heads = {k: v for k, v in last.items() if k.startswith(f"test_{metric}_") and
                 k != f"test_{metric}_best"}
        val = {f"val_{k}": last.get(f"val_{k}", math.nan) for k in scores} if validated else {}
        results_rows.append({
            **identity,
            **val,
            **{f"test_{k}": last.get(f"test_{k}", math.nan) for k in scores},
            **heads,
            "epochs": done,
            # Training and evaluation time, as the engine measured each epoch.
            "wall_s": round(sum(r.get("train_s", 0.0) + r.get("eval_s", 0.0) for r in rows), 2),
            "status": status,
            # The epoch whose loss became NaN or infinite; its rows are not in epochs.csv.
            "diverged_epoch": int(diverged["epoch"]) if diverged else "",
        })
    return results_rows, epoch_rows


class Tables(NamedTuple):
    results: list[dict]  # results.csv's rows
    epochs: list[dict]  # epochs.csv's rows


def write_tables(folder: RunFolder, live: dict[str, str] | None = None,
                 configs: dict[str, dict] | None = None, errors=()) -> Tables:
    """Rebuild results.csv and epochs.csv from the trials' records; their rows.
    `live`: Tune's states of the trials running now; `errors`: trials Tune gave up on."""
    tables = Tables(*build_tables(trial_records(folder, configs), folder.ends(), live, errors))
    write_csv(folder.results_csv, tables.results, first=IDENTITY)
    write_csv(folder.epochs_csv, tables.epochs, first=(*IDENTITY, "epoch"))
    return tables
