"""Evaluation: classification metrics, detection metrics, plots and reports."""

from covidcxr.evaluate.evaluator import ClassificationEvaluator, EvaluationReport, ReportExistsError
from covidcxr.evaluate.metrics import ClassificationMetrics, classification_metrics
from covidcxr.evaluate.provenance import data_fingerprint, software_versions

__all__ = [
    "ClassificationEvaluator",
    "ClassificationMetrics",
    "EvaluationReport",
    "ReportExistsError",
    "classification_metrics",
    "data_fingerprint",
    "software_versions",
]
