"""Running experiments: teachers, trials and sweeps (this package owns Ray)."""
