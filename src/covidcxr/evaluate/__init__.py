"""Evaluation: classification metrics, detection metrics, plots and reports."""

from covidcxr.evaluate.evaluator import ClassificationEvaluator, EvaluationReport
from covidcxr.evaluate.metrics import ClassificationMetrics, classification_metrics
from covidcxr.evaluate.provenance import data_fingerprint, software_versions, truth_fingerprint
from covidcxr.evaluate.report import ReportFiles, write_report

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
