"""The accuracy guard: an exported network against the Keras model, on held-out images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from attrs import frozen
from numpy.typing import ArrayLike

from covidcxr.errors import ConfigurationError

__all__ = [
    "MAX_ACCURACY_DROP",
    "MAX_RECALL_DROP",
    "MIN_MASK_DICE",
    "GuardReport",
    "MaskGuardReport",
    "measure_guard",
    "measure_mask_guard",
]

#: The largest drop of accuracy, in percentage points, that an export may cost.
MAX_ACCURACY_DROP: Final = 0.5
#: The largest drop of any class's recall, in percentage points, that an export may cost.
MAX_RECALL_DROP: Final = 1.0


def _points(value: float) -> float:
    return round(100.0 * value, 4)


@frozen
class GuardReport:
    """The exported network's accuracy beside the Keras model's, on the same images.

    Parameters
    ----------
    classes
        The labels, in the order of the probability columns.
    n_images
        How many held-out images were compared.
    reference_accuracy, exported_accuracy
        The share of images each model labelled correctly (its most probable class).
    reference_recall, exported_recall
        Each class's recall (``None`` for a class absent from the images).
    max_abs_probability_difference
        The largest absolute difference of any class probability of any image.
    n_labels_changed
        Images whose most probable class differs between the two.
    max_accuracy_drop, max_recall_drop
        The limits, in percentage points.
    """

    classes: tuple[str, ...]
    n_images: int
    reference_accuracy: float
    exported_accuracy: float
    reference_recall: dict[str, float | None]
    exported_recall: dict[str, float | None]
    max_abs_probability_difference: float
    n_labels_changed: int
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    max_recall_drop: float = MAX_RECALL_DROP

    @property
    def accuracy_drop(self) -> float:
        """How many percentage points of accuracy the export lost (negative: gained)."""
        return _points(self.reference_accuracy - self.exported_accuracy)

    @property
    def recall_drops(self) -> dict[str, float]:
        """Each present class's loss of recall, in percentage points."""
        drops: dict[str, float] = {}
        for label, before in self.reference_recall.items():
            after = self.exported_recall.get(label)
            if before is not None and after is not None:
                drops[label] = _points(before - after)
        return drops

    @property
    def failures(self) -> list[str]:
        """What exceeded its limit, in words (empty when the guard holds)."""
        found = []
        if self.accuracy_drop > self.max_accuracy_drop:
            found.append(
                f"accuracy dropped by {self.accuracy_drop:.2f} points "
                f"({100 * self.reference_accuracy:.2f}% -> {100 * self.exported_accuracy:.2f}%; "
                f"limit {self.max_accuracy_drop:g})"
            )
        for label, drop in self.recall_drops.items():
            if drop > self.max_recall_drop:
                found.append(
                    f"recall of {label!r} dropped by {drop:.2f} points "
                    f"(limit {self.max_recall_drop:g})"
                )
        return found

    @property
    def passed(self) -> bool:
        """Whether every drop is within its limit."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (as the manifest and model card record them)."""
        return {
            "n_images": self.n_images,
            "reference_accuracy": self.reference_accuracy,
            "exported_accuracy": self.exported_accuracy,
            "accuracy_drop_points": self.accuracy_drop,
            "reference_recall": dict(self.reference_recall),
            "exported_recall": dict(self.exported_recall),
            "recall_drop_points": self.recall_drops,
            "max_abs_probability_difference": self.max_abs_probability_difference,
            "n_labels_changed": self.n_labels_changed,
            "max_accuracy_drop_points": self.max_accuracy_drop,
            "max_recall_drop_points": self.max_recall_drop,
            "passed": self.passed,
        }


def _recalls(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[float | None]:
    recalls: list[float | None] = []
    for index in range(n_classes):
        members = truth == index
        recalls.append(float(np.mean(predicted[members] == index)) if members.any() else None)
    return recalls


def measure_guard(
    labels: Sequence[str],
    reference: ArrayLike,
    exported: ArrayLike,
    classes: Sequence[str],
    *,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    max_recall_drop: float = MAX_RECALL_DROP,
) -> GuardReport:
    """Compare two models' class probabilities on labelled images.

    Parameters
    ----------
    labels
        The true label of each image.
    reference, exported
        ``(n_images, n_classes)`` probabilities of the Keras model and of the export.
    classes
        The labels of the columns.
    max_accuracy_drop, max_recall_drop
        The limits, in percentage points.

    Returns
    -------
    GuardReport
        The figures; :attr:`GuardReport.passed` says whether the export may be used.

    Raises
    ------
    ConfigurationError
        If there are no images, the shapes differ, or a label is not one of ``classes``.

    Examples
    --------
    >>> report = measure_guard(["a", "b"], [[0.9, 0.1], [0.2, 0.8]],
    ...                        [[0.8, 0.2], [0.6, 0.4]], ["a", "b"])
    >>> report.accuracy_drop, report.recall_drops, report.passed
    (50.0, {'a': 0.0, 'b': 100.0}, False)
    """
    before = np.asarray(reference, np.float64)
    after = np.asarray(exported, np.float64)
    classes = tuple(classes)
    if before.ndim != 2 or before.shape != after.shape or before.shape[1] != len(classes):
        raise ConfigurationError(
            f"the guard needs two (n_images, {len(classes)}) probability arrays, got "
            f"{before.shape} and {after.shape}"
        )
    if len(labels) != before.shape[0] or not len(labels):
        raise ConfigurationError(
            f"the guard needs one label per image and at least one image; got {len(labels)} "
            f"labels for {before.shape[0]} images"
        )
    unknown = sorted({label for label in labels if label not in classes})
    if unknown:
        raise ConfigurationError(
            f"held-out labels {unknown} are not among the model's classes {list(classes)}"
        )
    truth = np.array([classes.index(label) for label in labels])
    first, second = before.argmax(axis=1), after.argmax(axis=1)
    return GuardReport(
        classes=classes,
        n_images=len(truth),
        reference_accuracy=float(np.mean(first == truth)),
        exported_accuracy=float(np.mean(second == truth)),
        reference_recall=dict(zip(classes, _recalls(truth, first, len(classes)), strict=True)),
        exported_recall=dict(zip(classes, _recalls(truth, second, len(classes)), strict=True)),
        max_abs_probability_difference=float(np.max(np.abs(before - after))),
        n_labels_changed=int(np.sum(first != second)),
        max_accuracy_drop=max_accuracy_drop,
        max_recall_drop=max_recall_drop,
    )


#: The least mean Dice between the Keras and the exported network's masks that an export of
#: a segmentation network (lungs, lesions) may keep.
MIN_MASK_DICE: Final = 0.97


@frozen
class MaskGuardReport:
    """An exported segmentation network's masks beside the Keras network's, image by image.

    The masks are the probability maps thresholded as the stage thresholds them; an image
    where both masks are empty agrees fully (Dice 1).

    Parameters
    ----------
    network
        ``"lungs"`` or ``"detector"``.
    n_images
        How many held-out images were compared.
    threshold
        The probability the stage thresholds its maps at.
    mean_dice, min_dice
        The Dice coefficient of the two masks, averaged over the images and at its lowest.
    max_abs_probability_difference
        The largest absolute difference of any pixel's probability.
    min_mean_dice
        The limit on :attr:`mean_dice`.
    """

    network: str
    n_images: int
    threshold: float
    mean_dice: float
    min_dice: float
    max_abs_probability_difference: float
    min_mean_dice: float = MIN_MASK_DICE

    @property
    def failures(self) -> list[str]:
        """What fell below its limit, in words (empty when the guard holds)."""
        if self.mean_dice >= self.min_mean_dice:
            return []
        return [
            f"the {self.network} masks agree with the Keras network's at a mean Dice of "
            f"{self.mean_dice:.4f} (limit {self.min_mean_dice:g})"
        ]

    @property
    def passed(self) -> bool:
        """Whether the masks agree well enough."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (as the manifest and model card record them)."""
        return {
            "n_images": self.n_images,
            "threshold": self.threshold,
            "mean_dice": self.mean_dice,
            "min_dice": self.min_dice,
            "max_abs_probability_difference": self.max_abs_probability_difference,
            "min_mean_dice": self.min_mean_dice,
            "passed": self.passed,
        }


def measure_mask_guard(
    network: str,
    reference: ArrayLike,
    exported: ArrayLike,
    *,
    threshold: float,
    min_mean_dice: float = MIN_MASK_DICE,
) -> MaskGuardReport:
    """Compare two segmentation networks' probability maps on the same images.

    Parameters
    ----------
    network
        What the maps are of (``"lungs"``, ``"detector"``), for messages.
    reference, exported
        ``(n_images, height, width)`` probability maps of the Keras network and the export.
    threshold
        Where the stage cuts its maps into masks.
    min_mean_dice
        The limit on the mean Dice.

    Raises
    ------
    ConfigurationError
        If there are no images or the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> keras_maps = np.zeros((2, 4, 4)); keras_maps[:, :2] = 0.9
    >>> exported_maps = keras_maps.copy(); exported_maps[1, :2, :2] = 0.2
    >>> report = measure_mask_guard("lungs", keras_maps, exported_maps, threshold=0.5)
    >>> round(report.mean_dice, 4), round(report.min_dice, 4), report.passed
    (0.8333, 0.6667, False)
    """
    before = np.asarray(reference, np.float64)
    after = np.asarray(exported, np.float64)
    if before.ndim != 3 or before.shape != after.shape or not len(before):
        raise ConfigurationError(
            f"the {network} guard needs two (n_images, height, width) arrays of the same "
            f"shape with at least one image, got {before.shape} and {after.shape}"
        )
    first, second = before >= threshold, after >= threshold
    overlap = np.sum(first & second, axis=(1, 2))
    total = np.sum(first, axis=(1, 2)) + np.sum(second, axis=(1, 2))
    dice = np.where(total > 0, 2.0 * overlap / np.maximum(total, 1), 1.0)
    return MaskGuardReport(
        network=network,
        n_images=len(before),
        threshold=float(threshold),
        mean_dice=float(np.mean(dice)),
        min_dice=float(np.min(dice)),
        max_abs_probability_difference=float(np.max(np.abs(before - after))),
        min_mean_dice=min_mean_dice,
    )
