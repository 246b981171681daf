"""Experiment tracking: a sweep's trials in MLflow or Weights & Biases (`tracking:` in the
study file, `tracking/section.py`), one tracker per file and a line in `TRACKERS`.

The trackers are filled by the sweep's own process from the run folder's records, each time
the tables are rebuilt (`study/monitor.py`), never from inside a trial:
- both executors alike: a trial's history is written by its rank 0 whether it runs in the
  Tune trial or in Ray Train workers (Ray Train V2 refuses Tune's logger callbacks in a
  trainer's RunConfig, and a Ray Train trial's reports reach Tune late);
- what a tracker shows is exactly results.csv and epochs.csv;
- a resumed sweep finds what each store already holds and adds only what is new: no run is
  opened twice and no epoch logged twice, however the sweep was killed.

A tracker that fails (a server down) costs a warning line, not the sweep: the next sync
catches up, since the run folder holds everything.
"""
