"""Evaluation: classification metrics, detection metrics, plots and reports."""

from covidcxr.evaluate._detection import (
    COCO_IOU_THRESHOLDS,
    DetectionMetrics,
    ImageDetectionFigures,
    ImageMatch,
    PrecisionRecallCurve,
    average_precision,
    evaluate_detections,
    match_detections,
    mean_average_precision,
)
from covidcxr.evaluate._evaluator import (
    ClassificationEvaluator,
    EvaluationReport,
    OneClassPredictionWarning,
    one_class_warning,
)
from covidcxr.evaluate._metrics import (
    AveragedScores,
    Calibration,
    ClassificationMetrics,
    ClassScores,
    ConfidenceInterval,
    ReliabilityBin,
    RocCurve,
    classification_metrics,
)
from covidcxr.evaluate._plots import (
    figure_to_png,
    plot_confusion_matrix,
    plot_image_grid,
    plot_precision_recall_curve,
    plot_reliability_diagram,
    plot_roc_curves,
    plot_training_history,
)
from covidcxr.evaluate._provenance import (
    DataFingerprint,
    data_fingerprint,
    software_versions,
    truth_fingerprint,
)
from covidcxr.evaluate._report import DRAWN_BOX_LEGEND, ReportFiles, write_report

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "DRAWN_BOX_LEGEND",
    "AveragedScores",
    "Calibration",
    "ClassScores",
    "ClassificationEvaluator",
    "ClassificationMetrics",
    "ConfidenceInterval",
    "DataFingerprint",
    "DetectionMetrics",
    "EvaluationReport",
    "ImageDetectionFigures",
    "ImageMatch",
    "OneClassPredictionWarning",
    "PrecisionRecallCurve",
    "ReliabilityBin",
    "ReportFiles",
    "RocCurve",
    "average_precision",
    "classification_metrics",
    "data_fingerprint",
    "evaluate_detections",
    "figure_to_png",
    "match_detections",
    "mean_average_precision",
    "one_class_warning",
    "plot_confusion_matrix",
    "plot_image_grid",
    "plot_precision_recall_curve",
    "plot_reliability_diagram",
    "plot_roc_curves",
    "plot_training_history",
    "software_versions",
    "truth_fingerprint",
    "write_report",
]
