"""What `sweep.py --dry-run` prints: the trial plan, the teachers, and the estimated work."""

from __future__ import annotations

import statistics
from collections import Counter

from sdkd_core.data import validation_count
from sdkd_core.recipe import Recipe
from study.estimate import CPU_GFLOPS_PER_CORE, FULL_SIZES, teacher_flops, trial_flops
from study.experiment import teacher_archs, teacher_spec
from study.plan import asha_grace_period, compared_values, confirm_seeds, draws_per_method
from study.runfolder.trials import Pair, PlannedTrial
from study.space import Space
from study.teachers import TeacherCache


def print_plan(space: Space, fixed: list[PlannedTrial], n_search: int, cache: TeacherCache,
               context, args) -> None:
    ds = space.dataset.name
    full_train, full_test = FULL_SIZES[ds]
    split = space.dataset.val_split
    n_val = 0 if split is None else validation_count(split, full_train)
    full_train -= n_val  # the validation images are held out before n_train is taken
    n_train = min(space.dataset.n_train or full_train, full_train)
    n_test = space.dataset.n_test or full_test
    epochs = space.recipe.epochs
    held = f" / {n_val} validation" if n_val else ""
    print(f"space {space.name}: {ds} ({n_train} train{held} / {n_test} test images), "
          f"{epochs} epochs per trial, seeds {space.seeds}")
    print_pair_protocols(space)
    counts = Counter((t.method, t.pair.label) for t in fixed)
    print(f"fixed trials: {len(fixed)}")
    for (method, pair), n in counts.items():
        print(f"  {method:<8} {pair:<24} x{n}")
    budget = draws_per_method(space, n_search)
    pairs = ", pair" if len(space.pairs) > 1 else ""
    print(f"drawn trials: {n_search} ({space.search.sampler}; scheduler "
          f"{space.search.scheduler}; each tuned method the same budget)")
    if n_search and space.search.scheduler == "asha" and (moved := asha_grace_period(space)[1]):
        print(f"  {moved}")
    other_seeds = confirm_seeds(space)
    top = space.search.confirm_top
    n_confirm = 0
    flops = sum(trial_flops(t, ds, n_train, n_test, epochs) for t in fixed)
    for method, n in budget.items():
        # The best `top`, and the best of each value a claim compares (they may coincide).
        per_pair = top + len(compared_values(space, method)) if top else 0
        confirming = per_pair * len(space.pairs) * len(other_seeds) \
            if n and args.max_trials is None else 0
        per_trial = statistics.mean(trial_flops(PlannedTrial(method, Pair(p.teacher, p.student)),
                                                ds, n_train, n_test, epochs)
                                    for p in space.pairs)
        cost = (n + confirming) * per_trial
        flops, n_confirm = flops + cost, n_confirm + confirming
        dims = ", ".join(space.keys_of(method)) + pairs
        print(f"  {method:<8} {n} drawn over {dims or 'nothing'} (+{confirming} confirming), "
              f"up to {cost / 1e15:.3f} PFLOP")
    if n_confirm:
        claims = any(compared_values(space, m) for m in budget)
        print(f"confirming trials: up to {n_confirm} (the best {space.search.confirm_top} "
              "drawn configuration(s) of each pair and method"
              + (", and of each value a claim compares," if claims else "")
              + f" again on seeds {other_seeds})")
    total = len(fixed) + n_search + n_confirm
    print(f"total trials: {total}")

    teacher_train = min(space.teacher.n_train or full_train, full_train)
    teacher_recipe = Recipe.from_dict(space.teacher.recipe_dict())
    for arch in teacher_archs(space):
        spec = teacher_spec(context, arch)
        cached = cache.load(spec) is not None
        if spec.checkpoint is not None:
            print(f"teacher {arch}: published checkpoint {spec.checkpoint} "
                  f"({'measured' if cached else 'to measure on the test images'})")
            continue
        if not cached:
            flops += teacher_flops(arch, ds, teacher_train, full_test, teacher_recipe.epochs)
        print(f"teacher {arch}: {recipe_text(teacher_recipe)} on {teacher_train} images "
              f"({'cached' if cached else 'to train'})")
    r = space.resources
    print(f"resources: {r.num_workers} worker(s) per trial, {r.cpus_per_worker:g} CPU each, "
          f"{'GPU ' + format(r.gpus_per_trial, 'g') + ' per trial' if r.use_gpu else 'no GPU'}"
          f", up to {r.max_concurrent} trials at once ({context.executor}"
          f"{', SyncBatchNorm' if r.sync_batchnorm else ''})")
    pflop = flops / 1e15
    if r.use_gpu:
        hours = flops / (args.gpu_tflops * 1e12) / 3600
        print(f"estimated work: {pflop:.1f} PFLOP = {hours:.1f} GPU-hours at "
              f"{args.gpu_tflops:g} effective TFLOP/s per GPU (--gpu-tflops); "
              f"ASHA stops some drawn trials early, so this is an upper bound")
    else:
        hours = flops / (CPU_GFLOPS_PER_CORE * 1e9) / 3600
        print(f"estimated work: {pflop:.3f} PFLOP = {hours:.2f} CPU-core-hours at "
              f"{CPU_GFLOPS_PER_CORE:g} GFLOP/s per core (measured, docs/benchmarks.md); "
              f"an upper bound when ASHA stops drawn trials")
    print("dry run: nothing was started or written")


def recipe_text(recipe: Recipe) -> str:
    schedule = "cosine" if recipe.schedule == "cosine" else \
        f"step x{recipe.gamma:g} at {', '.join(f'{m:g}' for m in recipe.milestones)}"
    return f"{recipe.epochs} epochs, lr {recipe.lr:g} ({schedule}), batch {recipe.batch_size}"


def print_pair_protocols(space: Space) -> None:
    """Each pair's recipe, and the settings it gives its methods where it changes them."""
    base = space.recipe_obj()
    print(f"recipe: {recipe_text(base)}")
    for p in space.pairs:
        changes = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in space.pair_recipe(p.teacher, p.student).items()]
        changes += [f"{k}={v}" for k, v in p.settings.items()]
        if changes:
            print(f"  pair {p.teacher}->{p.student}: {', '.join(changes)}")
