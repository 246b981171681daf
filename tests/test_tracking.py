"""The `tracking:` section and the --mlflow / --wandb flags: read, merged over the file, and
a tracker that cannot open refused in one line before the sweep writes anything. What the
trackers hold after real sweeps is checked where those sweeps run: tests/test_executors.py
(MLflow, both executors, SIGKILL and --resume) and tests/test_tuned_methods.py (MLflow and
W&B offline, by flags, with the report)."""

from __future__ import annotations

import pytest
from conftest import assert_usage_error, free_port, run_mains
from sweeps import tiny_space

from study.sweep_args import build_parser
from study.tracking.section import MlflowSection, TrackingSection, WandbSection


def test_true_false_and_sections_turn_trackers_on_and_off():
    assert TrackingSection().enabled() == []
    on = TrackingSection.model_validate({"mlflow": True, "wandb": False})
    assert on.mlflow == MlflowSection() and on.wandb is None and on.enabled() == ["mlflow"]
    both = TrackingSection.model_validate({"mlflow": {"experiment": "e"},
                                           "wandb": {"mode": "offline"}})
    assert both.enabled() == ["mlflow", "wandb"] and both.mlflow.experiment == "e"


@pytest.mark.parametrize("argv, mlflow, wandb", [
    ([], None, None),
    (["--mlflow"], MlflowSection(), None),
    (["--mlflow", "http://h:5000", "--wandb", "proj"], MlflowSection(uri="http://h:5000"),
     WandbSection(project="proj")),
    (["--wandb"], None, WandbSection()),
])
def test_flags_go_over_the_study_files_section(argv, mlflow, wandb):
    args = build_parser().parse_args(["--space", "s.yaml", *argv])
    merged = TrackingSection().with_flags(args.mlflow, args.wandb)
    assert (merged.mlflow, merged.wandb) == (mlflow, wandb)
    # The file's own settings stay unless a flag gives a value.
    file = TrackingSection(mlflow=MlflowSection(experiment="mine"), wandb=WandbSection(
        mode="offline"))
    merged = file.with_flags(args.mlflow, args.wandb)
    assert merged.mlflow.experiment == "mine" and merged.wandb.mode == "offline"
    if args.mlflow:
        assert merged.mlflow.uri == args.mlflow
    if args.wandb:
        assert merged.wandb.project == args.wandb


def test_a_tracker_that_cannot_open_is_one_line_and_no_sweep(tmp_path):
    """A server that does not answer, or W&B online without a login: exit 2, one line naming
    the file, the key and the fix; the run folder holds no sweep to resume."""
    port = free_port()
    cases = {"mlflow": (["--mlflow", f"http://127.0.0.1:{port}"], "tracking.mlflow: the store "
                        f"at http://127.0.0.1:{port} refused or did not answer"),
             "wandb": (["--wandb"], "tracking.wandb: No API key configured")}
    space = tiny_space(tmp_path)
    results = run_mains([("study.sweep", ["--space", str(space), "--output",
                                          str(tmp_path / name), *flags])
                         for name, (flags, _) in cases.items()],
                        env={"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path),
                             "WANDB_API_KEY": "", "WANDB_MODE": "online"})
    for (name, (_, fragment)), result in zip(cases.items(), results, strict=True):
        assert_usage_error(result, f"sweep.py: error: {space}: {fragment}")
        run = tmp_path / name
        assert not (run / "space.yaml").exists() and not (run / "study.json").exists()
