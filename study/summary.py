"""The sweep's closing summary: the best drawn configurations, and every method over seeds."""

from __future__ import annotations

import math
from typing import Any

from sdkd_core.distillers import get_method
from sdkd_core.stats import summarize
from study.runfolder.trials import BASELINE, CONFIRMING, DRAWN, confirmed_trial
from study.study_object import Study


def summary(study: Study, rows: list[dict[str, Any]]) -> str:
    """The best drawn configurations per pair, and every method's mean over seeds."""
    lines = []
    score = f"test_{study.task.metric}"  # test_acc, test_miou, test_rmse
    for method in study.tuned_methods:
        lines += _best_drawn(study, method, [r for r in rows if r["method"] == method])
    baselines = [r for r in rows if r["role"] == BASELINE and r["status"] == "completed"
                 and _finite(r[score])]
    if baselines:
        lines.append(f"Baselines, mean ± std over seeds ({score} last epoch / best epoch):")
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in baselines:
            groups.setdefault((f"{r['teacher']}->{r['student']}", r["method"]), []).append(r)
        for (pair, method), rs in groups.items():
            last = [r[score] for r in rs]
            best = [r[f"{score}_best"] for r in rs]
            label = get_method(method).label
            lines.append(f"  {pair:<22} {label:<8} {summarize(last)} / {summarize(best)}"
                         f"  (n={len(rs)})")
    confirmed = [r for r in rows if r["role"] == CONFIRMING and r["status"] == "completed"
                 and _finite(r[score])]
    if confirmed:
        lines.append(f"Best drawn configurations on every seed, mean ± std ({score} last "
                     "epoch / best epoch):")
        by_id = {r["trial_id"]: r for r in rows}
        for drawn_id in dict.fromkeys(confirmed_trial(r["trial_id"]) for r in confirmed):
            rs = [by_id[drawn_id], *(r for r in confirmed
                                     if confirmed_trial(r["trial_id"]) == drawn_id)]
            pair = f"{rs[0]['teacher']}->{rs[0]['student']}"
            lines.append(f"  {pair:<22} {drawn_id:<18} {summarize([r[score] for r in rs])}"
                         f" / {summarize([r[f'{score}_best'] for r in rs])}  (n={len(rs)})")
    diverged = [f"{r['trial_id']} (epoch {r['diverged_epoch']})" for r in rows
                if r["status"] == "diverged"]
    if diverged:
        lines.append(f"Diverged (loss NaN or infinite, left out above): {', '.join(diverged)}")
    return "\n".join(lines) if lines else "no finished trials yet"


def _best_drawn(study: Study, method: str, rows: list[dict[str, Any]]) -> list[str]:
    """A tuned method's best drawn configurations per pair, and the epochs its search spent."""
    metric, keys = study.metric, study.file.keys_of(method)
    drawn = [r for r in rows if r["role"] == DRAWN and r["status"] in ("completed", "stopped")
             and _finite(r[metric])]
    if not drawn:
        return []
    spent = sum(int(r["epochs"]) for r in rows if r["role"] == DRAWN)
    lines = [f"Best drawn {get_method(method).label} configurations ({metric}, last epoch "
             f"unless *_best; {spent} epochs spent on its search):"]
    for pair in dict.fromkeys(f"{r['teacher']}->{r['student']}" for r in drawn):
        mine = [r for r in drawn if f"{r['teacher']}->{r['student']}" == pair]
        mine.sort(key=lambda r: r[metric], reverse=study.mode == "max")
        for r in mine[:3]:
            params = "  ".join(f"{k}={_fmt(r.get(k))}" for k in keys)
            lines.append(f"  {pair:<22} {r['trial_id']:<18} {study.task.show(r[metric]):>7}  "
                         f"{r['epochs']} ep  {params}")
    return lines


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
