"""results.csv and epochs.csv, rebuilt from the trials' own records in tune/ and confirm/."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from sdkd_core.files import write_csv
from study.runfolder import IDENTITY, TRAIN_HISTORY_FILE, TUNE_KEYS, RunFolder, is_diverged


def trial_records(tune_dir: Path, configs: dict[str, dict] | None = None,
                  train_dir: Path | None = None):
    """{trial name: (config, reported results in order)} from every trial folder in tune/.

    `configs` are the live trials' configs, for a trial whose params.json Tune has not
    written yet. `train_dir`: Ray Train's run folders, whose epoch records (`epochs.json`)
    supply any epoch Tune did not log (a sweep killed between a Train checkpoint and Tune's
    record of it resumes after that epoch).
    """
    configs = configs or {}
    records: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    if not tune_dir.exists():
        return records
    for params in sorted(tune_dir.glob("*/params.json")):
        try:
            config = json.loads(params.read_text())
        except json.JSONDecodeError:  # being written right now
            config = configs.get(params.parent.name)
            if config is None:
                continue
        results = []
        result_file = params.with_name("result.json")
        if result_file.exists():
            for line in result_file.read_text().splitlines():
                # A line cut short by a kill is skipped: the epoch is reported again on resume.
                with contextlib.suppress(json.JSONDecodeError):
                    results.append(json.loads(line))
        name = config["trial_name"]
        train_file = train_dir / name / TRAIN_HISTORY_FILE if train_dir is not None else None
        if train_file is not None and train_file.exists():
            logged = {r.get("epoch") for r in results}
            with contextlib.suppress(json.JSONDecodeError):
                missing = [r for r in json.loads(train_file.read_text())
                           if r["epoch"] not in logged]
                results = sorted(missing, key=lambda r: r["epoch"]) + results
        records[name] = (config, results)
    return records


def build_tables(records, ends: dict[str, dict], live: dict[str, str] | None = None,
                 errors=()):
    """(results rows, epochs rows) from `trial_records`.

    A trial's status is its end record (`completed`, `stopped`, `diverged`) when it has one;
    else `error` (in `errors`), `running` (Tune's live state in `live`), `interrupted` (some
    epochs) or `pending`.
    """
    live = live or {}
    results_rows, epoch_rows = [], []
    # Every sampled parameter is a column of every row, right after the identity.
    param_keys = list(dict.fromkeys(k for config, _ in records.values()
                                    for k in config.get("params", {})))
    # With a validation split every trial reports val_acc: a column of every row.
    validated = any("val_acc" in r and not is_diverged(r)
                    for _, results in records.values() for r in results)
    for name, (config, results) in records.items():
        end = ends.get(name)
        # A trial stopped by ASHA may have trained on while being stopped: its record ends
        # at the epoch ASHA judged.
        last_epoch = int(end["epoch"]) if end and end["how"] == "stopped" else None
        by_epoch: dict[int, dict[str, Any]] = {}
        seconds: dict[int, float] = {}
        diverged = next((r for r in results if is_diverged(r)), None)
        for result in results:
            if "epoch" in result and not is_diverged(result):
                epoch = int(result["epoch"])
                if last_epoch is not None and epoch > last_epoch:
                    continue
                by_epoch[epoch] = {k: v for k, v in result.items() if k not in TUNE_KEYS}
                seconds[epoch] = float(result.get("time_this_iter_s", 0.0))
        identity = {"trial_id": name, **{k: config[k] for k in IDENTITY[1:]},
                    **{k: config["params"].get(k, "") for k in param_keys}}
        rows = [{**identity, **by_epoch[e]} for e in sorted(by_epoch)]
        epoch_rows.extend(rows)
        last = rows[-1] if rows else {}
        done = len(rows)
        if diverged or (end and end["how"] == "diverged"):
            status = "diverged"
            diverged = diverged or end
        elif end:
            status = end["how"]
        elif name in errors:
            status = "error"
        elif live.get(name) == "RUNNING":
            status = "running"
        else:
            status = "interrupted" if done else "pending"
        heads = {k: v for k, v in last.items() if k.startswith("test_acc_") and
                 k != "test_acc_best"}
        val = {k: last.get(k, math.nan) for k in ("val_acc", "val_acc_best")} \
            if validated else {}
        results_rows.append({
            **identity,
            **val,
            "test_acc": last.get("test_acc", math.nan),
            "test_acc_best": last.get("test_acc_best", math.nan),
            **heads,
            "epochs": done,
            "wall_s": round(sum(seconds.values()), 2),
            "status": status,
            # The epoch whose loss became NaN or infinite; its rows are not in epochs.csv.
            "diverged_epoch": int(diverged["epoch"]) if diverged else "",
        })
    return results_rows, epoch_rows


def write_tables(folder: RunFolder, live: dict[str, str] | None = None,
                 configs: dict[str, dict] | None = None, errors=()) -> list[dict]:
    """Rebuild results.csv and epochs.csv from the trials' records; results.csv's rows.
    `live`: Tune's states of the trials running now; `errors`: trials Tune gave up on."""
    records = {**trial_records(folder.tune_dir, configs, folder.train_dir),
               **trial_records(folder.confirm_dir, configs, folder.train_dir)}
    results_rows, epoch_rows = build_tables(records, folder.ends(), live, errors)
    write_csv(folder.results_csv, results_rows, first=IDENTITY)
    write_csv(folder.epochs_csv, epoch_rows, first=(*IDENTITY, "epoch"))
    return results_rows
