"""What `sweep.py --dry-run` prints: the trial plan, the teachers, and the estimated work."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from sdkd_core.data import validation_count
from sdkd_core.errors import UserError
from sdkd_core.recipe import Recipe
from study.estimate import CPU_GFLOPS_PER_CORE, teacher_flops, trial_flops
from study.plan import compared_values, confirm_seeds
from study.runfolder.trials import PlannedTrial
from study.study_object import Study
from study.teachers import TeacherCache


def print_plan(study: Study, gpu_tflops: float) -> None:
    file, ds = study.file, study.file.dataset.name
    info = file.dataset.info(listed=False)  # a plan reads no image files but a folder's classes
    full_train, full_test = info.n_train, info.n_test
    split = file.dataset.val_split
    n_val = 0 if split is None else validation_count(split, full_train)
    full_train -= n_val  # the validation images are held out before n_train is taken
    n_train = min(file.dataset.n_train or full_train, full_train)
    n_test = file.dataset.n_test or full_test
    epochs = study.epochs
    held = f" / {n_val} validation" if n_val else ""
    print(f"space {study.name}: {ds} ({n_train} train{held} / {n_test} test images), "
          f"{epochs} epochs per trial, seeds {file.seeds}")
    print_pair_protocols(study)
    counts = Counter((t.method, t.pair) for t in study.baselines)
    print(f"baseline trials: {len(study.baselines)}")
    for (method, pair), n in counts.items():
        print(f"  {method:<8} {pair:<24} x{n}")
    pairs = ", pair" if len(file.pairs) > 1 else ""
    print(f"drawn trials: {study.n_drawn} ({file.search.sampler}; scheduler "
          f"{file.search.scheduler}; each tuned method the same budget)")
    if study.first_rung_note:
        print(f"  {study.first_rung_note}")
    other_seeds = confirm_seeds(file)
    top = file.search.confirm_top
    n_confirm = 0
    flops = sum(trial_flops(t, info, n_train, n_test, epochs) for t in study.baselines)
    for method, n in study.draws.items():
        # The best `top`, and the best of each value a claim compares (they may coincide).
        per_pair = top + len(compared_values(file, method)) if top else 0
        confirming = per_pair * len(file.pairs) * len(other_seeds) \
            if n and not study.limited else 0
        per_trial = statistics.mean(trial_flops(PlannedTrial(method, p.teacher, p.student),
                                                info, n_train, n_test, epochs)
                                    for p in file.pairs)
        cost = (n + confirming) * per_trial
        flops, n_confirm = flops + cost, n_confirm + confirming
        dims = ", ".join(file.keys_of(method)) + pairs
        print(f"  {method:<8} {n} drawn over {dims or 'nothing'} (+{confirming} confirming), "
              f"up to {cost / 1e15:.3f} PFLOP")
    if n_confirm:
        claims = any(compared_values(file, m) for m in study.draws)
        print(f"confirming trials: up to {n_confirm} (the best {top} "
              "drawn configuration(s) of each pair and method"
              + (", and of each value a claim compares," if claims else "")
              + f" again on seeds {other_seeds})")
    total = len(study.baselines) + study.n_drawn + n_confirm
    print(f"total trials: {total}")

    cache = TeacherCache(study.cache_dir)
    teacher_train = min(file.teacher.n_train or full_train, full_train)
    for arch, spec in study.teachers.items():
        if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
            print(f"teacher {arch}: published checkpoint {spec.checkpoint} (not on this "
                  "machine: the sweep itself needs it)")
            continue
        try:
            cached = cache.load(spec) is not None
        except UserError:  # a teacher's key names its files: a plan made away from the data
            cached = False
        if spec.checkpoint is not None:
            print(f"teacher {arch}: published checkpoint {spec.checkpoint} "
                  f"({'measured' if cached else 'to measure on the test images'})")
            continue
        if not cached:
            flops += teacher_flops(arch, info, teacher_train, full_test, spec.recipe.epochs)
        print(f"teacher {arch}: {recipe_text(spec.recipe)} on {teacher_train} images "
              f"({'cached' if cached else 'to train'})")
    r = file.resources
    print(f"resources: {r.num_workers} worker(s) per trial, {r.cpus_per_worker:g} CPU each, "
          f"{'GPU ' + format(r.gpus_per_trial, 'g') + ' per trial' if r.use_gpu else 'no GPU'}"
          f", up to {r.max_concurrent} trials at once ({study.executor}"
          f"{', SyncBatchNorm' if r.sync_batchnorm else ''})")
    pflop = flops / 1e15
    if r.use_gpu:
        hours = flops / (gpu_tflops * 1e12) / 3600
        print(f"estimated work: {pflop:.1f} PFLOP = {hours:.1f} GPU-hours at "
              f"{gpu_tflops:g} effective TFLOP/s per GPU (--gpu-tflops); "
              f"ASHA stops some drawn trials early, so this is an upper bound")
    else:
        hours = flops / (CPU_GFLOPS_PER_CORE * 1e9) / 3600
        print(f"estimated work: {pflop:.3f} PFLOP = {hours:.2f} CPU-core-hours at "
              f"{CPU_GFLOPS_PER_CORE:g} GFLOP/s per core (measured, docs/benchmarks.md); "
              f"an upper bound when ASHA stops drawn trials")
    print("dry run: nothing was started or written")


def recipe_text(recipe: Recipe) -> str:
    schedule = {"cosine": "cosine", "poly": "poly 0.9"}.get(recipe.schedule) or \
        f"step x{recipe.gamma:g} at {', '.join(f'{m:g}' for m in recipe.milestones)}"
    return f"{recipe.epochs} epochs, lr {recipe.lr:g} ({schedule}), batch {recipe.batch_size}"


def print_pair_protocols(study: Study) -> None:
    """Each pair's recipe, and the settings it gives its methods where it changes them."""
    print(f"recipe: {recipe_text(study.file.recipe_obj())}")
    for p in study.file.pairs:
        changes = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in study.file.pair_recipe(p.teacher, p.student).items()]
        changes += [f"{k}={v}" for k, v in p.settings.items()]
        if changes:
            print(f"  pair {p.teacher}->{p.student}: {', '.join(changes)}")
