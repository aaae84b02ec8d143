"""The default input gate, which asks: is this an upright, positive frontal radiograph.

A classifier trained to tell COVID-19, normal and pneumonia apart answers on anything, and
confidently: its features and its logits describe how the three classes differ, not what a
chest radiograph is. Measured on a VGG19-BN model trained on COVID-QU-Ex (see
``benchmarks/bench_trust.py``), Mahalanobis distances on its features at four depths
(Lee et al. 2018; FRODO, Calli et al. 2019) refused 9-64 % of a set of photographs, scans
of other modalities, noise, and inverted, rotated, cropped or tiled radiographs, and the
energy score on its logits 0.7 %; this gate refused 99.4 % of them and accepted 98.5 % of
COVID-QU-Ex Test.

This gate learns what the training radiographs look like with a network of its own,
trained on the training radiographs alone with a self-supervised task (Golan and El-Yaniv
2018, "Deep anomaly detection using geometric transformations"; Hendrycks et al. 2019):
each image is shown in eight versions -- rotated by 0, 90, 180 or 270 degrees, grey levels
as they are or inverted -- and the network learns which version it sees. On a radiograph
like the training ones it answers confidently and correctly for all eight; on a
photograph, a CT slice or noise it cannot tell the versions apart, and a radiograph that is
itself rotated or inverted shows up as the "wrong" version. The out-of-distribution score
is the mean negative log-probability of the right answer over the eight versions; the
threshold is set on training radiographs held out from the network's training, to accept
``acceptance`` of them. Cheap pixel checks catch blank frames first, with a plain reason.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

import cv2
import numpy as np
from numpy.typing import NDArray

from covidcxr._model_archive import (
    ArchiveFormat,
    all_finite,
    check_params,
    read_model_archive,
    write_model_archive,
)
from covidcxr._params import Estimator
from covidcxr._plain import plain_data
from covidcxr.classify._inputs import as_unit_float
from covidcxr.errors import ConfigurationError, ModelFormatError, TrainingDivergedError
from covidcxr.preprocess._profile import clip_to_unit
from covidcxr.records import GateDecision, XRay

if TYPE_CHECKING:
    import keras

__all__ = ["MIN_MIRROR_RECALL", "ChestXrayGate", "n_versions", "version_of"]

_FORMAT: Final = ArchiveFormat("covidcxr.gate", 1, "covidcxr input gate")
# Rotations by quarter turns (anticlockwise, as numpy.rot90), each with grey levels as
# they are and inverted.
_N_VERSIONS: Final = 8
_EPSILON: Final = 1e-7
_WHAT_IT_LOOKS_LIKE: Final = {
    1: "it looks rotated by 90 degrees anticlockwise",
    2: "it looks upside down (rotated by 180 degrees)",
    3: "it looks rotated by 90 degrees clockwise",
    4: "its grey levels look inverted (a negative)",
    5: "it looks inverted and rotated",
    6: "it looks inverted and upside down",
    7: "it looks inverted and rotated",
}
_NOT_A_CXR: Final = "not a frontal chest radiograph like the training ones"
#: Why an image is refused whose score came out NaN or infinite (a network fault).
_UNSCORED: Final = "the input gate could not score it (its score is not a finite number)"
_MIRRORED: Final = (
    "it looks mirrored left to right (the heart on the image's left); check the film's "
    "side marker (a patient with dextrocardia is refused too)"
)
_MIRROR_STREAM: Final = 2  # the mirror check's own random stream (see _fit_mirror)
#: The mirror check is kept only if, on held-out training radiographs, it refuses at
#: least this share of their mirror images (at ``mirror_acceptance`` of the originals).
#: Radiographs that do not show their side (symmetric phantoms) give it no use.
MIN_MIRROR_RECALL: Final = 0.5


def n_versions() -> int:
    """How many versions of each image the gate's network learns to tell apart (8)."""
    return _N_VERSIONS


def version_of(images: NDArray[np.float32], version: int) -> NDArray[np.float32]:
    """Version ``version`` (0-7) of a batch of ``(n, h, w)`` images in ``[0, 1]``.

    Versions 0-3 rotate by that many quarter turns anticlockwise; 4-7 do the same to the
    inverted image (``1 - x``).

    Examples
    --------
    >>> x = np.array([[[0.0, 1.0], [0.0, 0.0]]], np.float32)
    >>> version_of(x, 1)[0].tolist(), version_of(x, 4)[0].tolist()
    ([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 1.0]])
    """
    if not 0 <= version < _N_VERSIONS:
        raise ValueError(f"version must be in 0..{_N_VERSIONS - 1}, got {version}")
    rotated = np.rot90(images, version % 4, axes=(1, 2))
    out = 1.0 - rotated if version >= 4 else rotated
    return np.ascontiguousarray(out, dtype=np.float32)


def _undoing(version: int) -> int:
    """The version that turns version ``version`` of an image back into the image.

    Examples
    --------
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 2, 3) / 5
    >>> all(np.allclose(version_of(version_of(x, v), _undoing(v)), x) for v in range(8))
    True
    """
    quarter_turns = (4 - version % 4) % 4
    return quarter_turns + (4 if version >= 4 else 0)


def _small(pixels: NDArray[Any], size: int) -> NDArray[np.float32]:
    unit = as_unit_float(np.asarray(pixels))
    if unit.ndim == 3:  # a colour image that reached the gate unconverted
        unit = unit.mean(axis=2, dtype=np.float32)
    unit = clip_to_unit(unit)
    return np.asarray(
        cv2.resize(unit, (size, size), interpolation=cv2.INTER_AREA), dtype=np.float32
    )


def _pixel_problem(pixels: NDArray[Any], min_contrast: float) -> str | None:
    array = np.asarray(pixels)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return "the image holds NaN or infinite values"
    if array.dtype == np.uint16:
        # 10- to 12-bit data stored in 16 bits: judged on the scale it uses.
        spread = float(np.std(array)) / max(float(array.max()), 4095.0)
    else:
        unit = as_unit_float(array)
        # cv2.meanStdDev is one pass in double precision; numpy's std is several.
        spread = float(cv2.meanStdDev(unit)[1][0, 0] if unit.ndim == 2 else np.std(unit))
    if spread < min_contrast:
        return f"blank image: almost no contrast (grey-level spread {spread:.3f})"
    return None


def _build_network(size: int, seed: int) -> keras.Model:
    import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    for block, filters in enumerate((16, 32, 64, 64), start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=seed + block),
            name=f"conv{block}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{block}")(x)
        x = keras.layers.ReLU(name=f"relu{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{block}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = keras.layers.Dense(
        _N_VERSIONS,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 10),
        name="version",
    )(x)
    return keras.Model(inputs, outputs, name="cxr_gate")


def _build_mirror_network(size: int, seed: int) -> keras.Model:
    """The mirror check's network, which tells whether an image is mirrored left to right.

    The same blocks as the version network, but the last map is flattened, not averaged:
    which side the heart is on is a matter of position, which global pooling would lose.
    """
    import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    for block, filters in enumerate((16, 32, 64, 64), start=1):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(seed=seed + 20 + block),
            name=f"mirror_conv{block}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"mirror_bn{block}")(x)
        x = keras.layers.ReLU(name=f"mirror_relu{block}")(x)
        x = keras.layers.MaxPooling2D(name=f"mirror_pool{block}")(x)
    x = keras.layers.Flatten(name="mirror_features")(x)
    outputs = keras.layers.Dense(
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 30),
        name="mirrored",
    )(x)
    return keras.Model(inputs, outputs, name="cxr_gate_mirror")


def _mirrored(images: NDArray[np.float32]) -> NDArray[np.float32]:
    """Each of a batch of ``(n, h, w)`` images mirrored left to right."""
    return np.ascontiguousarray(images[:, :, ::-1])


class ChestXrayGate(Estimator):
    """Refuse what is not an upright, positive frontal chest radiograph like the training ones.

    Parameters
    ----------
    input_size
        Side, in pixels, of the square the gate looks at (images are resized to it).
    epochs
        Passes over the training radiographs (each seen in all eight versions per pass).
    batch_size
        Radiographs per training step (times eight versions).
    learning_rate
        Adam's learning rate.
    acceptance
        The share of held-out training radiographs the threshold accepts (0.99: refuse
        the most unusual 1 %). The default leaves a margin above the 98 % of in-
        distribution radiographs a gate must accept; a higher acceptance admits more
        of them and more of what is not a chest radiograph
        (``benchmarks/bench_trust.py`` measures both, ``results/trust.md``).
    holdout
        The share of training radiographs held out from the network's training to set the
        threshold on.
    min_contrast
        Images whose grey levels (scaled to ``[0, 1]``) spread less than this (standard
        deviation) are refused as blank before the network looks at them.
    mirror
        Also learn to tell a radiograph from its mirror image, and refuse films that look
        mirrored left to right. The eight versions above are rotations and inversions, so
        without it a mirrored film passes, and the classifier, which learns where the
        heart is, changes its answer on many of them. Learnt from the training
        radiographs alone (each shown as it is and mirrored); kept only if it refuses at
        least :data:`MIN_MIRROR_RECALL` of the held-out radiographs' mirror images, and
        there are enough of them to set its threshold (``1 + 1 / (1 - mirror_acceptance)``:
        201 at the default, so about 1,000 training radiographs; with fewer none is
        trained).
        Setting it false on a fitted gate switches the check off.
    mirror_epochs
        Passes over the training radiographs for the mirror check.
    mirror_acceptance
        The share of held-out training radiographs (as they are) the mirror check accepts.
    seed
        Seeds the split, the shuffling and the initial weights.

    Attributes
    ----------
    threshold_ : float
        The out-of-distribution score above which an image is refused.
    holdout_scores_ : numpy.ndarray
        The held-out training radiographs' scores (the threshold is their
        ``acceptance`` quantile).
    n_fitted_ : int
        How many radiographs the gate learnt from (network and threshold together).
    history_ : dict
        Training loss and accuracy per epoch.
    mirror_ : dict or None
        The mirror check as fitted: ``threshold`` (of the probability that an image is
        mirrored; ``None`` when the check was not kept), ``holdout_accepted`` and
        ``holdout_mirrored_refused`` (on the held-out radiographs), ``n_holdout``, and
        ``note`` saying why it was not kept. ``None`` without ``mirror``.

    Examples
    --------
    >>> gate = ChestXrayGate(epochs=1)
    >>> gate.acceptance
    0.99
    """

    #: The fewest training radiographs the gate is fitted on: a fifth of them set the
    #: threshold, and fewer than 20 would make it the largest of a handful of scores.
    min_images: Final = 100

    def __init__(
        self,
        *,
        input_size: int = 32,
        epochs: int = 4,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        acceptance: float = 0.99,
        holdout: float = 0.2,
        min_contrast: float = 0.02,
        mirror: bool = True,
        mirror_epochs: int = 15,
        mirror_acceptance: float = 0.995,
        seed: int = 0,
    ) -> None:
        self.input_size = input_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.acceptance = acceptance
        self.holdout = holdout
        self.min_contrast = min_contrast
        self.mirror = mirror
        self.mirror_epochs = mirror_epochs
        self.mirror_acceptance = mirror_acceptance
        self.seed = seed

    def _check_params(self) -> None:
        def whole(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(
                    f"ChestXrayGate: {name} must be a whole number >= {low}, got {value!r}"
                )

        whole("input_size", 16)
        whole("epochs", 1)
        whole("batch_size", 1)
        whole("mirror_epochs", 1)
        if not isinstance(self.mirror, bool):
            raise ConfigurationError(
                f"ChestXrayGate: mirror must be true or false, got {self.mirror!r}"
            )
        for name, low, high in (
            ("acceptance", 0.5, 1.0),
            ("mirror_acceptance", 0.5, 1.0),
            ("holdout", 0.05, 0.5),
            ("min_contrast", 0.0, 0.5),
            ("learning_rate", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (low < value < high or (name == "min_contrast" and value == 0))
            ):
                raise ConfigurationError(
                    f"ChestXrayGate: {name} must be a number in ({low}, {high}), got {value!r}"
                )

    # -- learning ---------------------------------------------------------------------

    def fit(self, xrays: Sequence[XRay]) -> Self:
        """Learn what the training radiographs look like, and set the threshold.

        Parameters
        ----------
        xrays
            The prepared training radiographs (labels are not used). At least
            :attr:`min_images`, of which ``holdout`` set the threshold.

        Returns
        -------
        ChestXrayGate
            ``self``.

        Raises
        ------
        ConfigurationError
            For bad parameters or too few radiographs.
        TrainingDivergedError
            If the training loss stops being finite.
        """
        import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

        self._check_params()
        learn, held, rng = self._split(xrays)
        n_images = len(learn) + len(held)
        model = _build_network(self.input_size, self.seed)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        versions = _versions_dataset(learn, self.batch_size, rng)
        history = model.fit(
            versions,
            epochs=self.epochs,
            # The dataset shuffles with the seeded generator; Keras's own shuffle of a
            # PyDataset's batches draws on Python's global random state, which made two
            # fits with the same seed differ.
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
        losses = [float(v) for v in history.history.get("loss", [])]
        if len(losses) < self.epochs or not all(math.isfinite(v) for v in losses):
            raise TrainingDivergedError(
                f"ChestXrayGate: training diverged (loss {losses}); lower learning_rate"
            )
        self.model_ = model
        self.history_ = {k: [float(v) for v in vs] for k, vs in history.history.items()}
        self.holdout_scores_, _ = self._scores(held)
        # An observed score ("higher"), so at least ``acceptance`` of them is accepted.
        self.threshold_ = float(np.quantile(self.holdout_scores_, self.acceptance, method="higher"))
        self.n_fitted_ = n_images
        self.mirror_model_ = None
        self.mirror_ = None
        if self.mirror:
            self._fit_mirror(learn, held)
        return self

    def fit_mirror(self, xrays: Sequence[XRay]) -> Self:
        """Learn the mirror check of a fitted gate, leaving the rest of it as it is.

        For a gate fitted (or saved) without one: its version network and threshold do not
        change, so what it accepted before, it still accepts, mirrored films aside. The
        radiographs are split as :meth:`fit` splits them (``holdout``, ``seed``).

        Parameters
        ----------
        xrays
            The prepared training radiographs the gate was fitted on (or like them).

        Returns
        -------
        ChestXrayGate
            ``self``, with ``mirror`` set.
        """
        self._check_fitted()
        self._check_params()
        learn, held, _ = self._split(xrays)
        self._fit_mirror(learn, held)
        self.mirror = True  # only once fitted: a failed fit leaves the gate as it was
        return self

    def _split(
        self, xrays: Sequence[XRay]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], np.random.Generator]:
        """The radiographs with contrast as the networks see them, split in two.

        Those they learn from, those held out to set thresholds, and the seeded generator
        that split them (the version network's shuffling continues it).

        Raises
        ------
        ConfigurationError
            If fewer than :attr:`min_images` have contrast.
        """
        images = [
            _small(x.pixels, self.input_size)
            for x in xrays
            if _pixel_problem(x.pixels, self.min_contrast) is None
        ]
        if len(images) < self.min_images:
            raise ConfigurationError(
                f"ChestXrayGate needs at least {self.min_images} training radiographs with "
                f"contrast, got {len(images)}"
            )
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(images))
        n_held = max(2, round(self.holdout * len(images)))
        stack = np.stack(images)
        return stack[order[n_held:]], stack[order[:n_held]], rng

    def _fit_mirror(self, learn: NDArray[np.float32], held: NDArray[np.float32]) -> None:
        """Train the mirror network on ``learn``; set its threshold on ``held``.

        Its shuffling has a generator of its own, seeded from ``seed``: so :meth:`fit` and
        :meth:`fit_mirror` on the same radiographs give the same network.
        """
        import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

        # ``method="higher"`` takes the score at index ceil(a * (n - 1)): below
        # 1 + 1 / (1 - a) scores (201 at 0.995) that is their maximum, whatever it is, and
        # the share of new radiographs the threshold would refuse is unknown.
        needed = math.ceil(1.0 / (1.0 - self.mirror_acceptance) - 1e-9) + 1
        if len(held) < needed:  # known before training: none is trained
            self.mirror_model_ = None
            self.mirror_ = {
                "threshold": None,
                "holdout_accepted": None,
                "holdout_mirrored_refused": None,
                "n_holdout": len(held),
                "note": (
                    f"not kept: {len(held)} held-out radiographs cannot set a threshold that "
                    f"accepts {self.mirror_acceptance:.1%} of them (at least {needed} needed)"
                ),
            }
            return
        rng = np.random.default_rng((self.seed, _MIRROR_STREAM))
        model = _build_mirror_network(self.input_size, self.seed)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss="binary_crossentropy",
            metrics=["accuracy"],
        )
        history = model.fit(
            _mirror_dataset(learn, self.batch_size, rng),
            epochs=self.mirror_epochs,
            shuffle=False,  # seeded in the dataset, as for the version network
            verbose=0,
            callbacks=[keras.callbacks.TerminateOnNaN()],
        )
        losses = [float(v) for v in history.history.get("loss", [])]
        if len(losses) < self.mirror_epochs or not all(math.isfinite(v) for v in losses):
            raise TrainingDivergedError(
                f"ChestXrayGate: the mirror check's training diverged (loss {losses}); "
                "lower learning_rate"
            )
        as_is = _mirror_probabilities(model, held)
        mirrored = _mirror_probabilities(model, _mirrored(held))
        threshold = float(np.quantile(as_is, self.mirror_acceptance, method="higher"))
        refused = float(np.mean(mirrored > threshold))
        note = (
            None
            if refused >= MIN_MIRROR_RECALL
            else (
                f"not kept: it refused only {refused:.0%} of the held-out radiographs' "
                f"mirror images (at least {MIN_MIRROR_RECALL:.0%} needed): these radiographs "
                "may not show which side is which, or it needs more mirror_epochs"
            )
        )
        kept = note is None
        self.mirror_model_ = model if kept else None
        self.mirror_ = {
            "threshold": threshold if kept else None,
            "holdout_accepted": float(np.mean(as_is <= threshold)),
            "holdout_mirrored_refused": refused,
            "n_holdout": len(held),
            "note": note,
        }

    # -- assessing --------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigurationError("this ChestXrayGate is not fitted: call fit() or load()")

    def _network(self) -> Any:
        """The model as one traced function (about twice as fast as calling it eagerly).

        Kept beside the model it was traced for, so a new model (``fit``, ``load``) gets
        a new one.
        """
        import tensorflow as tf  # noqa: PLC0415 - heavy, imported only when a model is needed

        kept = getattr(self, "_traced", None)
        if kept is None or kept[0] is not self.model_:
            model = self.model_
            traced = tf.function(
                lambda x: model(x, training=False),
                input_signature=[
                    tf.TensorSpec((None, self.input_size, self.input_size, 1), tf.float32)
                ],
            )
            kept = (model, traced)
            self._traced = kept
        return kept[1]

    def _probabilities(self, images: NDArray[np.float32]) -> NDArray[np.float32]:
        network = self._network()
        parts = [
            np.asarray(network(images[start : start + 1024, :, :, None]))
            for start in range(0, len(images), 1024)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, _N_VERSIONS), np.float32)

    def _scores(
        self, images: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """Each image's score, and the network's probabilities for the image as it is."""
        upright = self._probabilities(version_of(images, 0))
        total = -np.log(np.maximum(upright[:, 0], _EPSILON)).astype(np.float64)
        for version in range(1, _N_VERSIONS):
            right = self._probabilities(version_of(images, version))[:, version]
            total -= np.log(np.maximum(right, _EPSILON))
        return total / _N_VERSIONS, upright

    def score(self, xrays: Sequence[XRay]) -> NDArray[np.float64]:
        """The out-of-distribution score of each image (higher is more unusual).

        The mean over the eight versions of ``-log p(right version)``; blank images are
        scored too, although :meth:`assess` refuses them before looking.
        """
        self._check_fitted()
        self._check_params()  # set_params may have changed them since fit
        if not xrays:
            return np.zeros(0, np.float64)
        return self._scores(np.stack([_small(x.pixels, self.input_size) for x in xrays]))[0]

    def assess(self, xrays: Sequence[XRay]) -> list[GateDecision]:
        """Accept or refuse each prepared image, with the reason for a refusal.

        Raises
        ------
        ConfigurationError
            If the gate is not fitted, or a parameter set since (``set_params``) is out
            of range.

        Examples
        --------
        See :doc:`/trust`.
        """
        self._check_fitted()
        self._check_params()  # set_params may have changed them since fit
        if not xrays:
            return []
        images = np.stack([_small(x.pixels, self.input_size) for x in xrays])
        scores, seen = self._scores(images)
        problems = [_pixel_problem(x.pixels, self.min_contrast) for x in xrays]
        looks = self._what_it_looks_like(images, scores, seen, problems)
        mirrored = self._looks_mirrored(images)
        decisions = []
        for index, (score, pixel_problem) in enumerate(zip(scores, problems, strict=True)):
            reason = pixel_problem
            if reason is None and not np.isfinite(score):
                # A NaN compares false with the threshold: it must not pass for a low score.
                reason = _UNSCORED
            elif reason is None and score > self.threshold_:
                looks_like = looks.get(index)
                reason = f"{_NOT_A_CXR}: {looks_like}" if looks_like else _NOT_A_CXR
            elif reason is None and mirrored[index]:
                reason = f"{_NOT_A_CXR}: {_MIRRORED}"
            shown = float(score) if np.isfinite(score) else math.inf
            decisions.append(GateDecision(reason is None, shown, self.threshold_, reason))
        return decisions

    def _looks_mirrored(self, images: NDArray[np.float32]) -> NDArray[np.bool_]:
        """Whether each image looks mirrored left to right (all false without the check).

        ``mirror=False`` switches a fitted check off (``set_params(mirror=False)``).
        """
        model = getattr(self, "mirror_model_", None)
        mirror = getattr(self, "mirror_", None)
        if not self.mirror or model is None or mirror is None or mirror.get("threshold") is None:
            return np.zeros(len(images), bool)
        return _mirror_probabilities(model, images) > float(mirror["threshold"])

    def _what_it_looks_like(
        self,
        images: NDArray[np.float32],
        scores: NDArray[np.float64],
        seen: NDArray[np.float32],
        problems: Sequence[str | None],
    ) -> dict[int, str]:
        """For refused images that look rotated or inverted, what they look like.

        The network's guess of the version it sees is only a guess: on noise or a
        photograph every version looks alike, and the guess is arbitrary. So a refused
        image is said to look rotated or inverted only when the network is sure (0.5 or
        more) and the image, turned back, would pass the gate; otherwise the reason stays
        the plain one.
        """
        candidates = {
            index: int(row.argmax())
            for index, (score, row, problem) in enumerate(zip(scores, seen, problems, strict=True))
            if problem is None
            and score > self.threshold_
            and row.argmax() != 0
            and row[row.argmax()] >= 0.5
        }
        if not candidates:
            return {}
        turned_back = np.concatenate(
            [
                version_of(images[index : index + 1], _undoing(version))
                for index, version in candidates.items()
            ]
        )
        corrected = self._scores(turned_back)[0]
        return {
            index: _WHAT_IT_LOOKS_LIKE[version]
            for (index, version), score in zip(candidates.items(), corrected, strict=True)
            if score <= self.threshold_
        }

    def summary(self) -> dict[str, Any]:
        """What the gate is and how it was set, as plain data (for a model card)."""
        self._check_fitted()
        return {
            "method": "self-supervised rotation and inversion prediction (Golan and El-Yaniv 2018)",
            "threshold": self.threshold_,
            "acceptance": self.acceptance,
            "holdout_acceptance": float(np.mean(self.holdout_scores_ <= self.threshold_)),
            "n_fitted": self.n_fitted_,
            "n_holdout": len(self.holdout_scores_),
            "mirror": self._mirror_summary(),
            "params": plain_data(self.get_params()),
        }

    def _mirror_summary(self) -> dict[str, Any] | None:
        """The mirror check as fitted, with ``active``: whether it refuses anything now."""
        mirror = getattr(self, "mirror_", None)
        if mirror is None:
            return None
        active = bool(self.mirror) and mirror.get("threshold") is not None
        return {**plain_data(mirror), "active": active}

    # -- persistence ------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted gate to one file, atomically (a model archive)."""
        self._check_fitted()
        if not all_finite(self.model_.get_weights()):
            raise TrainingDivergedError(
                f"not saving to {os.fspath(path)}: the gate has non-finite weights"
            )
        mirror_model = getattr(self, "mirror_model_", None)
        metadata = {
            "params": plain_data(self.get_params()),
            "threshold": self.threshold_,
            "holdout_scores": [float(s) for s in self.holdout_scores_],
            "n_fitted": self.n_fitted_,
            "history": self.history_,
            "mirror": plain_data(getattr(self, "mirror_", None)),
        }
        if mirror_model is not None and not all_finite(mirror_model.get_weights()):
            raise TrainingDivergedError(
                f"not saving to {os.fspath(path)}: the mirror check has non-finite weights"
            )
        # One Keras file: the version network alone, or both networks side by side.
        network = self.model_ if mirror_model is None else _side_by_side(self.model_, mirror_model)
        write_model_archive(path, _FORMAT, network.save, metadata, overwrite=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Self:
        """Read a gate written by :meth:`save`.

        Raises
        ------
        ModelFormatError
            If the file is not a saved gate, is damaged, or does not match its metadata.
        """
        import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

        with tempfile.TemporaryDirectory(prefix="covidcxr-load-") as scratch:
            metadata, keras_file = read_model_archive(path, _FORMAT, Path(scratch))
            params = check_params(cls, metadata, path)
            try:
                model = keras.models.load_model(keras_file, compile=False, safe_mode=True)
            except Exception as exc:
                raise ModelFormatError(f"{path}: Keras could not load the gate: {exc}") from exc
        try:
            # Gates saved before the mirror check existed had none.
            gate = cls(**{"mirror": False, **params})
            threshold = float(metadata["threshold"])
            held = np.asarray(metadata["holdout_scores"], np.float64)
            n_fitted = int(metadata["n_fitted"])
            mirror = metadata.get("mirror")
            if mirror is not None and not isinstance(mirror, dict):
                raise TypeError(f"mirror is {type(mirror).__name__}, not an object")  # noqa: TRY301
            mirror_threshold = mirror.get("threshold") if mirror is not None else None
            if mirror_threshold is not None and not math.isfinite(float(mirror_threshold)):
                raise ValueError(f"mirror threshold {mirror_threshold}")  # noqa: TRY301
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{path}: gate metadata is incomplete ({exc!r})") from exc
        model, mirror_model = _split_networks(model)
        if (mirror_threshold is None) != (mirror_model is None):
            raise ModelFormatError(
                f"{path}: the gate's metadata and networks disagree about its mirror check"
            )
        size = gate.input_size
        if tuple(model.input_shape) != (None, size, size, 1) or not math.isfinite(threshold):
            raise ModelFormatError(
                f"{path}: the gate's network takes {model.input_shape}, its metadata says "
                f"{size} px (threshold {threshold})"
            )
        gate.model_ = model
        gate.threshold_ = threshold
        gate.holdout_scores_ = held
        gate.n_fitted_ = n_fitted
        gate.history_ = dict(metadata.get("history") or {})
        gate.mirror_model_ = mirror_model
        gate.mirror_ = mirror
        return gate

    # Learned state, declared for type checkers.
    model_: keras.Model
    mirror_model_: keras.Model | None
    mirror_: dict[str, Any] | None
    threshold_: float
    holdout_scores_: NDArray[np.float64]
    n_fitted_: int
    history_: dict[str, list[float]]


def _shuffled_batches(
    images: NDArray[np.float32],
    batch_size: int,
    rng: np.random.Generator,
    examples: Callable[[NDArray[np.float32]], tuple[NDArray[np.float32], NDArray[Any]]],
) -> Any:
    """A Keras dataset of ``batch_size`` images per step, reshuffled each epoch by ``rng``.

    ``examples`` turns a batch of ``(n, h, w)`` images into the step's inputs and targets
    (every version of each, or each as it is and mirrored).
    """
    import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

    class Batches(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.order = rng.permutation(len(images))

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int) -> tuple[NDArray[np.float32], NDArray[Any]]:
            batch = images[self.order[index * batch_size : (index + 1) * batch_size]]
            x, y = examples(batch)
            return x[..., None], y

        def on_epoch_end(self) -> None:
            self.order = rng.permutation(len(images))

    return Batches()


def _versions_dataset(
    images: NDArray[np.float32], batch_size: int, rng: np.random.Generator
) -> Any:
    """Every version of ``batch_size`` images per step, labelled with the version."""

    def versions(batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
        x = np.concatenate([version_of(batch, v) for v in range(_N_VERSIONS)])
        return x, np.repeat(np.arange(_N_VERSIONS, dtype=np.int32), len(batch))

    return _shuffled_batches(images, batch_size, rng, versions)


def _mirror_dataset(images: NDArray[np.float32], batch_size: int, rng: np.random.Generator) -> Any:
    """``batch_size`` images per step, as they are (0) and mirrored (1)."""

    def mirrors(batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        x = np.concatenate([batch, _mirrored(batch)])
        return x, np.repeat(np.array([0.0, 1.0], np.float32), len(batch))

    return _shuffled_batches(images, batch_size, rng, mirrors)


def _mirror_probabilities(model: Any, images: NDArray[np.float32]) -> NDArray[np.float64]:
    """The mirror network's probability that each image is mirrored."""
    parts = [
        np.asarray(model(images[start : start + 1024, :, :, None], training=False))[:, 0]
        for start in range(0, len(images), 1024)
    ]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0, np.float64)


def _side_by_side(version: Any, mirror: Any) -> Any:
    """One Keras model holding both networks: the image in, both answers out.

    Each network goes in as an uncompiled model over its layers: a nested model keeps its
    optimizer's state in the saved file (Adam's two moments, twice the weights), which a
    shipped model does not need.
    """
    import keras  # noqa: PLC0415 - heavy, imported only when a model is needed

    def weights_only(network: Any) -> Any:
        # The same layers (and weights) in a model never compiled: clone_model would
        # compile its copy again.
        # One input and one output, not lists of one: the model is then called, once
        # loaded, with a plain array (a list-shaped model warns on each call).
        return keras.Model(network.input, network.output, name=network.name)

    size = version.input_shape[1]
    image = keras.Input((size, size, 1), name="image")
    outputs = [weights_only(version)(image), weights_only(mirror)(image)]
    return keras.Model(image, outputs, name="cxr_gate_with_mirror")


def _split_networks(model: Any) -> tuple[Any, Any | None]:
    """The version network and the mirror network (``None``) of a saved gate's model."""
    if model.name != "cxr_gate_with_mirror":
        return model, None
    try:
        return model.get_layer("cxr_gate"), model.get_layer("cxr_gate_mirror")
    except ValueError as exc:
        raise ModelFormatError(f"the gate's model lacks a network ({exc})") from exc
