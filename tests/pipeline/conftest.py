"""Fixtures for the pipeline tests: small but real components, and phantom data sets.

The components are registered as a test plugin.

They learn and predict for real (a softmax regression on thumbnails, a brightest-spot
detector), so the tests exercise the Pipeline's plumbing with components that behave like
the real ones, only faster.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import attrs
import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

import covidcxr
from covidcxr import Box, Detection, XRay
from covidcxr.cli import main
from covidcxr.errors import ModelFormatError
from covidcxr.phantoms import generate_phantoms, write_phantom_dataset
from covidcxr.preprocess import ResizeTransform
from covidcxr.testing import registered_plugin


@attrs.frozen
class ShrinkPreprocessor:
    """Stretch-resize to ``output_size`` and scale to float32 [0, 1]; boxes follow."""

    output_size: int = 32

    def __call__(self, xray: XRay) -> XRay:
        height, width = xray.shape
        sx, sy = self.output_size / width, self.output_size / height
        pixels = cv2.resize(
            np.asarray(xray.pixels),
            (self.output_size, self.output_size),
            interpolation=cv2.INTER_AREA,
        )
        boxes = [Box(b.x * sx, b.y * sy, b.width * sx, b.height * sy) for b in xray.boxes]
        scaled = np.asarray(pixels, np.float32) / 255.0
        size = (self.output_size, self.output_size)
        # The Preprocessor contract: a change of geometry is recorded, with its inverse.
        transform = ResizeTransform(sx, sy, 0.0, 0.0, xray.shape, size)
        meta = {**xray.meta, "transform": transform}
        return attrs.evolve(xray, pixels=scaled, boxes=boxes, meta=meta)


class SoftmaxClassifier:
    """Multinomial logistic regression on 8x8 thumbnails, trained by gradient descent."""

    # The Classifier protocol is checked with isinstance before fitting, so the attribute
    # must exist from the start (empty until fit or load sets it).
    classes_: tuple[str, ...] = ()

    def __init__(self, epochs: int = 30, learning_rate: float = 0.5, seed: int = 0) -> None:
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "learning_rate": self.learning_rate, "seed": self.seed}

    @staticmethod
    def _features(xrays: Iterable[XRay]) -> NDArray[np.float64]:
        rows = [
            cv2.resize(
                np.asarray(x.pixels, np.float32), (8, 8), interpolation=cv2.INTER_AREA
            ).ravel()
            for x in xrays
        ]
        return np.asarray(rows, np.float64)

    def _scores(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        logits = (features - self.mean_) / self.scale_ @ self.weights_ + self.bias_
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        train = list(xrays)
        self.classes_ = tuple(
            label for label in covidcxr.LABELS if label in {x.label for x in train}
        )
        features = self._features(train)
        target = np.eye(len(self.classes_))[[self.classes_.index(str(x.label)) for x in train]]
        self.mean_ = features.mean(axis=0)
        self.scale_ = features.std(axis=0) + 1e-6
        rng = np.random.default_rng(self.seed)
        self.weights_ = rng.normal(0, 0.01, (features.shape[1], len(self.classes_)))
        self.bias_ = np.zeros(len(self.classes_))
        self.history_: dict[str, list[float]] = {"loss": [], "accuracy": []}
        normalized = (features - self.mean_) / self.scale_
        for _ in range(self.epochs):
            probs = self._scores(features)
            self.history_["loss"].append(float(-np.mean(np.log(probs[target > 0] + 1e-12))))
            self.history_["accuracy"].append(float(np.mean(probs.argmax(1) == target.argmax(1))))
            gradient = (probs - target) / len(train)
            self.weights_ -= self.learning_rate * normalized.T @ gradient
            self.bias_ -= self.learning_rate * gradient.sum(axis=0)
        return self

    def predict_proba(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        return self._scores(self._features(xrays)).astype(np.float32)

    def predict(self, xrays: Iterable[XRay]) -> list[str]:
        return [self.classes_[i] for i in self.predict_proba(xrays).argmax(axis=1)]

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).mkdir(parents=True)
        state = {
            "params": self.get_params(),
            "classes": list(self.classes_),
            "history": self.history_,
            **{k: getattr(self, f"{k}_").tolist() for k in ("mean", "scale", "weights", "bias")},
        }
        (Path(path) / "model.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        try:
            state = json.loads((Path(path) / "model.json").read_text())
        except FileNotFoundError as exc:
            raise ModelFormatError(f"{path}: no model.json") from exc
        model = cls(**state["params"])
        model.classes_ = tuple(state["classes"])
        model.history_ = state["history"]
        for key in ("mean", "scale", "weights", "bias"):
            setattr(model, f"{key}_", np.asarray(state[key]))
        return model


class BrightestSpotDetector:
    """Boxes the brightest smoothed spot of each image, with a learned box size.

    It also records whether it was ever shown ground-truth boxes at detection time.
    """

    saw_truth_boxes = False

    def __init__(self, box_size: float = 6.0, apikey: str | None = None) -> None:
        self.box_size = box_size
        self.apikey = apikey

    def fit(self, xrays: Iterable[XRay], validation: Iterable[XRay] | None = None) -> Self:
        sizes = [b.width for x in xrays for b in x.boxes]
        self.box_size = float(np.median(sizes)) if sizes else self.box_size
        return self

    def detect(self, xray: XRay) -> list[Detection]:
        if xray.boxes:
            type(self).saw_truth_boxes = True
        pixels = cv2.GaussianBlur(np.asarray(xray.pixels, np.float32), (0, 0), 2.0)
        y, x = np.unravel_index(int(np.argmax(pixels)), pixels.shape)
        height, width = xray.shape
        half = self.box_size / 2
        box = Box.from_corners(
            max(x - half, 0), max(y - half, 0), min(x + half, width), min(y + half, height)
        )
        return [Detection(box, "opacity", float(np.clip(pixels.max(), 0, 1)))]

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "detector.json").write_text(json.dumps({"box_size": self.box_size}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        return cls(**json.loads((Path(path) / "detector.json").read_text()))


class FixedBoxDetector:
    """Always reports the same box (in the coordinates of the image it is given); no state."""

    def __init__(
        self, x: float = 4, y: float = 4, size: float = 8, apikey: str | None = None
    ) -> None:
        self.x, self.y, self.size, self.apikey = x, y, size, apikey

    def get_params(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "size": self.size, "apikey": self.apikey}

    def detect(self, xray: XRay) -> list[Detection]:
        return [Detection(Box(self.x, self.y, self.size, self.size), "opacity", 0.7)]

    def detect_batch(self, xrays: Iterable[XRay]) -> list[list[Detection]]:
        return [self.detect(xray) for xray in xrays]


class ComponentsPlugin:
    """The plugin object: registers the components above under test names."""

    @covidcxr.hookimpl
    def covidcxr_register_preprocessors(self, register: Any) -> None:
        register("test-shrink", ShrinkPreprocessor)

    @covidcxr.hookimpl
    def covidcxr_register_classifiers(self, register: Any) -> None:
        register("test-softmax", SoftmaxClassifier)

    @covidcxr.hookimpl
    def covidcxr_register_detectors(self, register: Any) -> None:
        register("test-brightest", BrightestSpotDetector)
        register("test-fixed", FixedBoxDetector)


TEST_CONFIG: dict[str, Any] = {
    "preprocessor": {"name": "test-shrink", "output_size": 32},
    "classifier": {"name": "test-softmax", "epochs": 40},
    "detector": {"name": "test-brightest"},
    "evaluation": {"n_bootstrap": 50, "seed": 1},
    # The input gate trains a network of its own; its tests are in test_trust.py.
    "trust": {"gate": False},
}


@pytest.fixture
def test_components(covidcxr_plugin: Callable[..., str]) -> str:
    """Register the small test components for the duration of a test."""
    return covidcxr_plugin(ComponentsPlugin(), name="pipeline-test-components")


@pytest.fixture(scope="module")
def module_test_components() -> Iterator[str]:
    """The test components, registered for a whole module (for module-scoped fits)."""
    with registered_plugin(ComponentsPlugin(), name="pipeline-test-components-module") as name:
        yield name


@pytest.fixture(scope="module")
def module_test_config() -> dict[str, Any]:
    """:data:`TEST_CONFIG`, for module-scoped fixtures (copy it before changing it)."""
    return copy.deepcopy(TEST_CONFIG)


@pytest.fixture
def test_config() -> dict[str, Any]:
    """A pipeline configuration naming the test components (a fresh copy per test)."""
    return copy.deepcopy(TEST_CONFIG)


@pytest.fixture(scope="session")
def phantom_train() -> list[XRay]:
    return generate_phantoms(12, size=64, seed=0)


@pytest.fixture(scope="session")
def phantom_test() -> list[XRay]:
    return generate_phantoms(6, size=64, seed=1)


# -- the command line ----------------------------------------------------------------------

#: A ``--config`` file naming the test components; the detector is not trained (the class
#: folders of a phantom dataset carry no lesion boxes to learn from).
CLI_CONFIG = """
[preprocessor]
name = "test-shrink"
output_size = 32

[classifier]
name = "test-softmax"
epochs = {epochs}

[detector]
name = "test-fixed"

[evaluation]
n_bootstrap = {n_bootstrap}
"""


def write_cli_config(path: Path, *, epochs: int = 10, n_bootstrap: int = 0) -> Path:
    """Write :data:`CLI_CONFIG` to ``path`` and return it."""
    path.write_text(CLI_CONFIG.format(epochs=epochs, n_bootstrap=n_bootstrap))
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``covidcxr ARGV`` in this process: its exit code, standard output and error."""
    try:
        main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    else:
        code = 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A ``--config`` file for the test components (10 epochs, no bootstrap)."""
    return write_cli_config(tmp_path / "pipeline.toml")


@pytest.fixture
def phantom_dir(tmp_path: Path) -> Path:
    """A phantom data set on disk: 3 radiographs per class, 64 px."""
    return write_phantom_dataset(tmp_path / "phantoms", n_per_class=3, size=64)
