"""Evaluation: classification metrics, detection metrics, plots and reports."""

from covidcxr.evaluate._evaluator import ClassificationEvaluator, EvaluationReport
from covidcxr.evaluate._metrics import ClassificationMetrics, classification_metrics
from covidcxr.evaluate._provenance import data_fingerprint, software_versions, truth_fingerprint
from covidcxr.evaluate._report import ReportFiles, write_report

__all__ = [
    "ClassificationEvaluator",
    "ClassificationMetrics",
    "EvaluationReport",
    "ReportFiles",
    "classification_metrics",
    "data_fingerprint",
    "software_versions",
    "truth_fingerprint",
    "write_report",
]
