"""Evaluation: classification metrics, detection metrics, plots and reports."""
