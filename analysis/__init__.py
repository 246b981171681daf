"""Turning a run folder into tables, plots and reports (reads only the files a run wrote)."""
