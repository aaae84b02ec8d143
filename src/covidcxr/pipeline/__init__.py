"""The end-to-end job: source → preprocessor → classifier → detector → evaluator.

A :class:`~covidcxr.Pipeline` names its components (looked up in the plugin registry, so a plugin's
detector or classifier is used exactly like a built-in one) or takes them as objects, and
is configured from Python or from a TOML file::

    # pipeline.toml
    [preprocessor]
    name = "gaussian-clahe"
    output_size = 128

    [classifier]
    name = "vgg19"
    input_size = 128
    weights = "none"        # TOML has no null; "none" means None for any option
    epochs = 20

    [detector]              # leave the table out, or name = "none", for no detector
    name = "local"

    [evaluation]
    n_bootstrap = 1000
    seed = 0

Every key of a component's table other than ``name`` is passed to its factory. The
preprocessor runs on every image before the classifier and the detector see it, in
training and in prediction alike, so a model always sees images prepared the same way;
each call reads and preprocesses every item of its source once (see :class:`~covidcxr.Pipeline`).

Every saved pipeline carries a model card, ``metadata.json`` and ``model_card.md``
(:func:`card_metadata`, :func:`render_model_card`); :func:`record_evaluation` adds an
evaluation to a saved model's card.
"""

from covidcxr.pipeline._card import (
    METADATA_NAME,
    METADATA_SCHEMA,
    MODEL_CARD_NAME,
    card_metadata,
    evaluation_entry,
    model_note,
    record_evaluation,
    render_model_card,
)
from covidcxr.pipeline._config import ComponentSpec, PipelineConfig, TrustConfig
from covidcxr.pipeline._estimator import Pipeline
from covidcxr.pipeline._outputs import (
    OUTPUT_FORMATS,
    DetectionsTable,
    detections_table,
    output_format,
    prediction_columns,
    prediction_row,
    skipped_path_for,
    write_predictions,
    write_skipped,
)
from covidcxr.pipeline._persistence import MANIFEST_NAME
from covidcxr.pipeline._prepared import DataPass, PreparedSet
from covidcxr.pipeline._trust import ClassPriors, TrustState
from covidcxr.records import Prediction

__all__ = [
    "MANIFEST_NAME",
    "METADATA_NAME",
    "METADATA_SCHEMA",
    "MODEL_CARD_NAME",
    "OUTPUT_FORMATS",
    "ClassPriors",
    "ComponentSpec",
    "DataPass",
    "DetectionsTable",
    "Pipeline",
    "PipelineConfig",
    "Prediction",
    "PreparedSet",
    "TrustConfig",
    "TrustState",
    "card_metadata",
    "detections_table",
    "evaluation_entry",
    "model_note",
    "output_format",
    "prediction_columns",
    "prediction_row",
    "record_evaluation",
    "render_model_card",
    "skipped_path_for",
    "write_predictions",
    "write_skipped",
]
