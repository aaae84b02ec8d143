"""Weakly supervised lesion boxes from a classifier's Grad-CAM, kept inside the lungs.

Grad-CAM (Selvaraju et al., 2017) weights the last convolutional feature map of a
classifier by the gradient of one class's probability, giving a coarse map of the image
regions that raised it. For the COVID-19 class those regions tend to be the opacities,
so the map, cut to the lung fields and thresholded, yields lesion boxes without a single
box or mask in training: only class labels. It is coarse (the map of a VGG19 is 1/16 of
its input) and should be read as a localisation hint, not a segmentation.

It works with :class:`covidcxr.VGG19Classifier` or any classifier offering the
same three members: ``model_`` (a fitted Keras model from :meth:`prepare_batch` output to
class probabilities), ``prepare_batch(xrays)`` and ``feature_layer_name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr._unet import keras_module
from covidcxr.detect._local import mask_to_detections
from covidcxr.errors import ConfigurationError, InvalidImageError
from covidcxr.labels import COVID19
from covidcxr.records import Detection, XRay

__all__ = ["CamClassifier", "GradCAMDetector", "cam_to_detections"]


class CamClassifier(Protocol):
    """What Grad-CAM needs from a classifier (``VGG19Classifier`` provides it)."""

    classes_: tuple[str, ...]
    model_: Any

    @property
    def feature_layer_name(self) -> str:
        """Name of the last convolutional layer of ``model_``."""
        ...

    def prepare_batch(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """The model's input for these radiographs."""
        ...


@runtime_checkable
class _OneNetwork(Protocol):
    """What a :class:`CamClassifier` has before it is fitted: one network's input and layer.

    An :class:`~covidcxr.classify.EnsembleClassifier` has several networks and neither.
    """

    @property
    def feature_layer_name(self) -> str:
        """Name of the last convolutional layer of ``model_``."""
        ...

    def prepare_batch(self, xrays: Iterable[XRay]) -> NDArray[np.float32]:
        """The model's input for these radiographs."""
        ...


def cam_to_detections(
    cam: NDArray[np.floating[Any]],
    *,
    probability: float,
    output_shape: tuple[int, int],
    lung_mask: NDArray[Any] | None = None,
    cam_threshold: float = 0.5,
    min_area_fraction: float = 0.005,
    label: str = "opacity",
) -> list[Detection]:
    """Boxes from one class activation map.

    The map is stretched onto the image, zeroed outside the lungs (when a lung mask is
    given), scaled so its maximum inside the lungs is 1, and thresholded; each component
    becomes a box scored ``probability x mean activation``, so that images the classifier
    doubts rank below confident ones.

    Parameters
    ----------
    cam
        A 2-D non-negative activation map at any resolution.
    probability
        The classifier's probability of the target class for this image, in ``[0, 1]``.
    output_shape
        ``(height, width)`` of the radiograph.
    lung_mask
        Lung fields, ``output_shape`` or any other size (stretched, nearest neighbour).
    cam_threshold
        Fraction of the map's maximum at which a pixel is lesion.
    min_area_fraction, label
        As for :func:`~covidcxr.detect.mask_to_detections`.

    Examples
    --------
    >>> import numpy as np
    >>> cam = np.zeros((4, 4), np.float32)
    >>> cam[1, 1] = 2.0
    >>> [d.box for d in cam_to_detections(cam, probability=0.9, output_shape=(16, 16))]
    [Box(x=4.0, y=4.0, width=4.0, height=4.0)]
    """
    height, width = output_shape
    # Bilinear, as in the Grad-CAM paper: the map is smooth evidence, not a label image.
    activation: NDArray[np.float32] = np.asarray(
        cv2.resize(
            np.maximum(np.asarray(cam, np.float32), 0.0),
            (width, height),
            interpolation=cv2.INTER_LINEAR,
        ),
        np.float32,
    )
    if lung_mask is not None:
        lungs = np.asarray(lung_mask)
        if lungs.shape != output_shape:
            lungs = cv2.resize(
                (lungs > 0).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST
            )
        activation = np.where(lungs > 0, activation, np.float32(0.0))
    peak = float(activation.max())
    if peak <= 0.0:
        return []
    found = mask_to_detections(
        activation / np.float32(peak),
        threshold=cam_threshold,
        min_area_fraction=min_area_fraction,
        label=label,
    )
    weight = min(max(float(probability), 0.0), 1.0)
    return [Detection(d.box, d.label, d.score * weight) for d in found]


class GradCAMDetector:
    """Lesion boxes from a fitted classifier's Grad-CAM for the COVID-19 class.

    Parameters
    ----------
    classifier
        A fitted :class:`~covidcxr.VGG19Classifier` (or a classifier with
        ``model_``, ``prepare_batch`` and ``feature_layer_name``).
    target_label
        The class whose evidence is mapped.
    cam_threshold
        Fraction of each map's maximum (inside the lungs) at which a pixel is lesion.
    min_probability
        Images whose probability of ``target_label`` is below this get no boxes.
    min_area_fraction
        Components smaller than this fraction of the image are dropped.
    lung_mask_key
        The ``meta`` key of a lung mask; without one the whole image is searched.
    label
        Label of the detections.
    batch_size
        Radiographs per gradient computation.

    Raises
    ------
    ConfigurationError
        If an option is out of range, or the classifier has no one network to map (an
        :class:`~covidcxr.classify.EnsembleClassifier`: map one of its ``members_``).

    Examples
    --------
    >>> from covidcxr.classify import VGG19Classifier  # doctest: +SKIP
    >>> detector = GradCAMDetector(VGG19Classifier.load("vgg19.cxr"))  # doctest: +SKIP
    >>> detector.detect(xray)  # doctest: +SKIP
    [Detection(box=Box(x=40.0, y=72.0, width=64.0, height=96.0), label='opacity', ...)]
    """

    def __init__(
        self,
        classifier: CamClassifier,
        *,
        target_label: str = COVID19,
        cam_threshold: float = 0.5,
        min_probability: float = 0.5,
        min_area_fraction: float = 0.005,
        lung_mask_key: str = "lung_mask",
        label: str = "opacity",
        batch_size: int = 16,
    ) -> None:
        if not 0.0 < cam_threshold < 1.0:
            raise ConfigurationError(f"cam_threshold must be in (0, 1), got {cam_threshold!r}")
        if not 0.0 <= min_probability <= 1.0:
            raise ConfigurationError(f"min_probability must be in [0, 1], got {min_probability!r}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size!r}")
        if not isinstance(classifier, _OneNetwork):
            raise ConfigurationError(
                "GradCAMDetector maps the features of one network, and "
                f"{type(classifier).__name__} offers none (it has no prepare_batch and "
                "feature_layer_name): pass a VGG19Classifier, or one member of an "
                "EnsembleClassifier (ensemble.members_[0])"
            )
        self.classifier = classifier
        self.target_label = target_label
        self.cam_threshold = cam_threshold
        self.min_probability = min_probability
        self.min_area_fraction = min_area_fraction
        self.lung_mask_key = lung_mask_key
        self.label = label
        self.batch_size = batch_size
        self._cam_model: Any = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(classifier={type(self.classifier).__name__}, "
            f"target_label={self.target_label!r}, cam_threshold={self.cam_threshold!r}, "
            f"min_probability={self.min_probability!r})"
        )

    def _target_index(self) -> int:
        classes = tuple(getattr(self.classifier, "classes_", ()))
        if self.target_label not in classes:
            raise ConfigurationError(
                f"the classifier does not predict {self.target_label!r} (its classes: "
                f"{classes or 'none; is it fitted?'})"
            )
        return classes.index(self.target_label)

    def _model(self) -> Any:
        if self._cam_model is None:
            model = getattr(self.classifier, "model_", None)
            if model is None:
                raise ConfigurationError(
                    "GradCAMDetector needs a fitted classifier (its model_ is not set): fit "
                    "it or load a saved one"
                )
            keras = keras_module()
            name = self.classifier.feature_layer_name
            try:
                features = model.get_layer(name).output
            except ValueError as exc:
                raise ConfigurationError(
                    f"the classifier's model has no layer {name!r} (feature_layer_name)"
                ) from exc
            self._cam_model = keras.Model(model.inputs, [features, model.output])
        return self._cam_model

    def class_activation_maps(
        self, xrays: Sequence[XRay]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Grad-CAM maps and target-class probabilities for a batch.

        Returns
        -------
        tuple of numpy.ndarray
            Maps of shape ``(n, h, w)`` at the feature-map resolution (non-negative, not
            normalised) and probabilities of shape ``(n,)``.
        """
        import tensorflow as tf  # noqa: PLC0415 - TensorFlow only when maps are computed

        index = self._target_index()
        model = self._model()
        inputs = tf.convert_to_tensor(self.classifier.prepare_batch(xrays))
        with tf.GradientTape() as tape:
            features, probabilities = model(inputs, training=False)
            target = probabilities[:, index]
        gradients = tape.gradient(target, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1))
        return np.asarray(cams, np.float32), np.asarray(target, np.float32)

    def detect(self, xray: XRay) -> list[Detection]:
        """Detect lesions in one radiograph; boxes in its own pixel coordinates."""
        return self.detect_batch([xray])[0]

    def detect_batch(self, xrays: Iterable[XRay]) -> list[list[Detection]]:
        """Detect lesions in many radiographs, ``batch_size`` per gradient computation."""
        images = list(xrays)
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            cams, probabilities = self.class_activation_maps(chunk)
            for xray, cam, probability in zip(chunk, cams, probabilities, strict=True):
                if probability < self.min_probability:
                    results.append([])
                    continue
                lungs = xray.meta.get(self.lung_mask_key)
                if lungs is not None and np.asarray(lungs).ndim != 2:
                    raise InvalidImageError(
                        f"meta[{self.lung_mask_key!r}] must be a 2-D mask", xray.id
                    )
                results.append(
                    cam_to_detections(
                        cam,
                        probability=float(probability),
                        output_shape=xray.shape,
                        lung_mask=lungs,
                        cam_threshold=self.cam_threshold,
                        min_area_fraction=self.min_area_fraction,
                        label=self.label,
                    )
                )
        return results
