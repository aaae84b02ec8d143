"""From radiographs to model input: scaling, range checks, resizing, augmentation, normalisation.

Radiographs arrive one at a time from any iterable (a :class:`~covidcxr.DatasetSource`
reads lazily) and leave as batches of model input through a :mod:`tf.data` pipeline, so
the whole dataset never sits in memory as float32. Per image, Python only converts the
pixels to ``[0, 1]`` and checks their range; resizing, augmentation and normalisation run as
TensorFlow ops on parallel threads, and batches are prefetched while the model works.

Normalisation matches the weights:

``"imagenet"``
    VGG19's own ("caffe") preprocessing: scale to 0-255 and subtract the ImageNet channel
    means (B, G, R = 103.939, 116.779, 123.68). The grayscale image is replicated to three
    channels, so the BGR channel swap is a no-op.
``"symmetric"``
    ``2 * x - 1``, mapping ``[0, 1]`` to ``[-1, 1]``: used when training from scratch
    (``weights=None``), where a zero-centred input helps the first layers.
"""

# TensorFlow/Keras are imported inside functions on purpose: importing covidcxr stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from attrs import define, field, frozen
from numpy.typing import NDArray

from covidcxr.preprocess._profile import InputRecorder
from covidcxr.records import XRay

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "IDENTITY_VIEW",
    "IMAGENET_BGR_MEAN",
    "Augmentation",
    "Normalization",
    "PixelRangeWarning",
    "ScanStats",
    "as_unit_float",
    "inference_batches",
    "make_dataset",
    "original_errors",
    "pixel_range_problem",
    "reiterable",
]

Normalization = Literal["imagenet", "symmetric"]


def reiterable(xrays: Iterable[XRay]) -> Iterable[XRay]:
    """``xrays`` in a form that can be read more than once.

    Training passes over the data more than once (an ensemble, once per member): a
    one-shot iterator is kept as the XRay records it yields (native dtype, not float32),
    once. Sources and lists pass through, and are read again on each pass.
    """
    return list(xrays) if iter(xrays) is xrays else xrays


#: ImageNet channel means on the 0-255 scale, in the BGR order VGG19's weights expect.
IMAGENET_BGR_MEAN: Final[tuple[float, float, float]] = (103.939, 116.779, 123.68)

# An image whose values span less than this fraction of the full scale is almost certainly
# mis-scaled (12-bit data in uint16, a blank frame) and will look uniform to the model.
_MIN_DYNAMIC_RANGE: Final = 1.0 / 32.0
_FLOAT_TOLERANCE: Final = 1e-3


# Where the generators of the datasets made inside an ``original_errors()`` block put the
# exception they raised: TensorFlow runs them on its own threads and hands the caller only
# a wrapper (InvalidArgumentError, UnknownError) whose text repeats the original's
# traceback, so the original is kept here to be raised instead.
_GENERATOR_ERRORS: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "covidcxr_generator_errors", default=None
)


@contextlib.contextmanager
def original_errors() -> Iterator[None]:
    """Raise the exception a :func:`make_dataset` input raised, not TensorFlow's wrapper.

    An error raised while reading the radiographs (an unreadable file's
    :class:`~covidcxr.InvalidImageError`, say) reaches the caller of a :mod:`tf.data`
    pipeline as a TensorFlow error that wraps its text. Around code that builds datasets
    with :func:`make_dataset` and consumes them (iterating, ``keras.Model.fit``), this
    re-raises the original exception, with its own type and traceback. Also usable as a
    decorator.
    """
    failures: list[BaseException] = []
    token = _GENERATOR_ERRORS.set(failures)
    try:
        yield
    except Exception:
        if failures:
            raise failures[0] from None
        raise
    finally:
        _GENERATOR_ERRORS.reset(token)


class PixelRangeWarning(UserWarning):
    """Pixels outside the range the classifier expects (a common cause of one-class models)."""


def as_unit_float(pixels: NDArray[Any]) -> NDArray[np.float32]:
    """Scale 2-D pixels to float32 in ``[0, 1]`` by their dtype's full range.

    ``uint8`` is divided by 255, ``uint16`` by 65535; ``float32`` is taken as already in
    ``[0, 1]`` (what :class:`~covidcxr.preprocess.GaussianClahePreprocessor` produces).

    Examples
    --------
    >>> as_unit_float(np.array([[0, 255]], np.uint8))
    array([[0., 1.]], dtype=float32)
    """
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535.0)
    return np.asarray(pixels, dtype=np.float32)


def pixel_range_problem(pixels: NDArray[Any]) -> str | None:
    """Say what looks wrong with an image's pixel range, or ``None`` when it looks right.

    Flags float images outside ``[0, 1]`` (0-255 floats, standardised values) and images
    whose values span less than 1/32 of the full scale (12-bit data stored in uint16, blank
    or nearly uniform frames).

    Examples
    --------
    >>> pixel_range_problem(np.array([[0.0, 200.0]], np.float32))
    'float pixels span [0, 200], outside [0, 1]'
    >>> pixel_range_problem(np.array([[0, 255]], np.uint8)) is None
    True
    """
    low, high = float(pixels.min()), float(pixels.max())
    if pixels.dtype == np.float32:
        if not (math.isfinite(low) and math.isfinite(high)):
            return "float pixels contain NaN or infinity"
        if low < -_FLOAT_TOLERANCE or high > 1.0 + _FLOAT_TOLERANCE:
            return f"float pixels span [{low:.4g}, {high:.4g}], outside [0, 1]"
        full_scale = 1.0
    else:
        full_scale = float(np.iinfo(pixels.dtype).max)
    if high - low < _MIN_DYNAMIC_RANGE * full_scale:
        return (
            f"{pixels.dtype} pixels span only [{low:.4g}, {high:.4g}] of a full scale of "
            f"{full_scale:.4g}"
        )
    return None


@define
class ScanStats:
    """What one pass over the radiographs saw: labels, a content fingerprint, range problems."""

    fingerprint: bool = False
    labels: list[str | None] = field(factory=list)
    ids: list[str] = field(factory=list)
    problems: list[tuple[str, str]] = field(factory=list)
    first_meta: Mapping[str, Any] | None = None
    #: Collects each image's intensity statistics and recorded preprocessing, when set.
    inputs: InputRecorder | None = None
    _hash: Any = field(factory=hashlib.sha256)

    def see(self, xray: XRay) -> None:
        """Record one radiograph."""
        self.labels.append(xray.label)
        self.ids.append(xray.id)
        if self.first_meta is None:
            self.first_meta = xray.meta
        if self.inputs is not None:
            self.inputs.see(xray)
        if self.fingerprint:
            pixels = np.ascontiguousarray(xray.pixels)
            header = f"{xray.id}\0{xray.label}\0{pixels.dtype.str}\0{pixels.shape}\0"
            self._hash.update(header.encode())
            self._hash.update(pixels.tobytes())
        problem = pixel_range_problem(xray.pixels)
        if problem is not None:
            self.problems.append((xray.id, problem))

    @property
    def digest(self) -> str:
        """The sha256 of ids, labels and pixels of every image seen, in order."""
        return str(self._hash.hexdigest())

    def warn(self, stacklevel: int = 3) -> None:
        """Issue one :class:`PixelRangeWarning` summarising the images that looked wrong."""
        if not self.problems:
            return
        first_id, first_problem = self.problems[0]
        warnings.warn(
            f"{len(self.problems)} of {len(self.ids)} radiographs have a suspicious pixel "
            f"range (first: {first_id!r}: {first_problem}). The classifier expects uint8, "
            "uint16 or float32 in [0, 1] with normal contrast; preprocess the images "
            "(covidcxr.preprocess.GaussianClahePreprocessor) or rescale them, or the model "
            "may predict one class for everything.",
            PixelRangeWarning,
            stacklevel=stacklevel,
        )


@frozen
class Augmentation:
    """The random changes :func:`make_dataset` makes to each training image.

    Each image gets its own draw, from a generator seeded with ``seed`` and drawn in input
    order, so every pass and a resumed run see the same views. A change whose size is 0
    is not drawn at all: turning one on leaves the draws of the others as they were.

    Parameters
    ----------
    degrees
        Rotation: an angle drawn uniformly from ``[-degrees, degrees]``.
    scale
        Zoom about the centre: a factor drawn uniformly from ``[1 - scale, 1 + scale]``
        (above 1 magnifies).
    shift
        Translation: each axis moved by a fraction of the side drawn uniformly from
        ``[-shift, shift]``.
    contrast
        Gamma: pixels in ``[0, 1]`` raised to a power drawn log-uniformly from
        ``[1 / (1 + contrast), 1 + contrast]`` (darker or brighter mid-tones, black and
        white kept).
    seed
        Seeds the draws.
    """

    degrees: float = 0.0
    scale: float = 0.0
    shift: float = 0.0
    contrast: float = 0.0
    seed: int = 0

    @property
    def geometric(self) -> bool:
        """Whether the image is resampled (rotated, zoomed or moved)."""
        return bool(self.degrees or self.scale or self.shift)

    def draw(self, rng: np.random.Generator) -> NDArray[np.float32]:
        """One image's view: ``[angle, zoom, shift x, shift y, gamma]``."""
        angle = rng.uniform(-self.degrees, self.degrees) if self.degrees else 0.0
        zoom = rng.uniform(1.0 - self.scale, 1.0 + self.scale) if self.scale else 1.0
        shift_x, shift_y = rng.uniform(-self.shift, self.shift, 2) if self.shift else (0.0, 0.0)
        limit = math.log1p(self.contrast)
        gamma = math.exp(rng.uniform(-limit, limit)) if self.contrast else 1.0
        return np.array([angle, zoom, shift_x, shift_y, gamma], np.float32)


#: The view of an image left as it is (see :meth:`Augmentation.draw`).
IDENTITY_VIEW: Final = np.array([0.0, 1.0, 0.0, 0.0, 1.0], np.float32)


def _affine_transform(
    angle_degrees: Any, size: int, zoom: Any = 1.0, shift_x: Any = 0.0, shift_y: Any = 0.0
) -> Any:
    import tensorflow as tf

    # ImageProjectiveTransform maps *output* coordinates to input ones; rotating the
    # sampling grid by +angle about the centre turns the image by -angle, and since
    # angles are drawn symmetrically that sign is immaterial. Dividing by the zoom makes
    # the image larger when it is above 1; the shift (a fraction of the side) moves it.
    # Written so that zoom 1 and no shift give the very values of a rotation alone.
    theta = angle_degrees * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    a0, a1, b0, b1 = cos / zoom, -sin / zoom, sin / zoom, cos / zoom
    centre = (size - 1) / 2.0
    dx, dy = shift_x * size, shift_y * size
    offset_x = centre - a0 * centre - a1 * centre - (a0 * dx + a1 * dy)
    offset_y = centre - b0 * centre - b1 * centre - (b0 * dx + b1 * dy)
    zero = tf.zeros_like(cos)
    return tf.stack([a0, a1, offset_x, b0, b1, offset_y, zero, zero])[None, :]


def _resample(x: Any, transform: Any, size: int) -> Any:
    import tensorflow as tf

    single = len(x.shape) == 3
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None] if single else x,
        transforms=transform,
        output_shape=tf.constant([size, size]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return x[0] if single else x


def _to_model_input(
    image: Any,
    view: Any,
    *,
    size: int,
    normalization: Normalization,
    rotate: bool,
    geometric: bool = False,
    contrast: bool = False,
) -> Any:
    """Model input from one ``(h, w)`` image or a batch of ``(n, h, w)`` images.

    ``view`` is an angle when ``rotate`` is set, or an :meth:`Augmentation.draw` vector
    when ``geometric`` or ``contrast`` is (the flags say which parts to apply, so that
    what is off costs nothing). The operations act on each image alone, so a batch gives
    each image the values it gets on its own (training converts image by image,
    prediction a batch at a time).
    """
    import tensorflow as tf

    x = tf.image.resize(image[..., None], (size, size), method="bilinear", antialias=True)
    if rotate:
        x = _resample(x, _affine_transform(view, size), size)
    elif geometric:
        x = _resample(x, _affine_transform(view[0], size, view[1], view[2], view[3]), size)
    x = tf.clip_by_value(x, 0.0, 1.0)
    if contrast:
        x = tf.pow(x, view[4])
    x = tf.concat([x, x, x], axis=-1)
    if normalization == "imagenet":
        return x * 255.0 - tf.constant(IMAGENET_BGR_MEAN, tf.float32)
    return x * 2.0 - 1.0


#: One traced batch-to-model-input function per (input size, normalisation, rotation or
#: not), for prediction: tracing is the expensive part, so it happens once per process.
_CONVERTERS: dict[tuple[int, str, bool], Any] = {}


def _converter(size: int, normalization: Normalization, *, rotate: bool = False) -> Any:
    converter = _CONVERTERS.get((size, normalization, rotate))
    if converter is None:
        import tensorflow as tf

        def convert(image: Any, angle: Any) -> Any:
            return _to_model_input(
                image, angle, size=size, normalization=normalization, rotate=rotate
            )

        converter = tf.function(
            convert,
            input_signature=[
                tf.TensorSpec((None, None, None), tf.float32),
                tf.TensorSpec((), tf.float32),
            ],
        )
        _CONVERTERS[(size, normalization, rotate)] = converter
    return converter


def inference_batches(
    xrays: Iterable[XRay],
    *,
    input_size: int,
    normalization: Normalization,
    batch_size: int,
    stats: ScanStats | None = None,
    rotations: tuple[float, ...] = (),
) -> Iterator[NDArray[np.float32]]:
    """Batches of model input for prediction, ``(n, size, size, 3)`` float32.

    What :func:`make_dataset` yields without augmentation, labels or shuffling (the same
    operations, so the same values), but converted a batch at a time by one function
    traced once per process. Building a :mod:`tf.data` pipeline traces its map function anew on
    every call, which costs about 0.2 s: most of the time of predicting one radiograph.
    Exceptions reading ``xrays`` raises reach the caller as they are.

    Parameters
    ----------
    xrays
        The radiographs, read one at a time.
    input_size, normalization, batch_size
        As for :func:`make_dataset`.
    stats
        Filled with ids, range problems and input statistics as the images stream past.
    rotations
        Test-time augmentation: after each image, its views rotated by these angles (in
        degrees, as training's augmentation rotates), so a batch of ``batch_size``
        images has ``batch_size * (1 + len(rotations))`` rows, each image's consecutive.
    """
    convert = _converter(input_size, normalization)
    rotate = _converter(input_size, normalization, rotate=True) if rotations else convert

    def converted(pixels: list[NDArray[np.float32]]) -> NDArray[np.float32]:
        # One call per run of same-shaped images (usually the whole batch): calling a
        # traced function costs about a millisecond, as much as a small network's image.
        parts = []
        start = 0
        while start < len(pixels):
            shape = pixels[start].shape
            stop = start + 1
            while stop < len(pixels) and pixels[stop].shape == shape:
                stop += 1
            group = np.stack(pixels[start:stop])
            each_view = [np.asarray(convert(group, 0.0), np.float32)]
            each_view += [np.asarray(rotate(group, angle), np.float32) for angle in rotations]
            # Each image's views consecutive: (images, views, ...) flattened.
            parts.append(np.stack(each_view, axis=1).reshape(-1, *each_view[0].shape[1:]))
            start = stop
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    batch: list[NDArray[np.float32]] = []
    for xray in xrays:
        if stats is not None:
            stats.see(xray)
        batch.append(as_unit_float(xray.pixels))
        if len(batch) == batch_size:
            yield converted(batch)
            batch = []
    if batch:
        yield converted(batch)


def make_dataset(
    xrays: Iterable[XRay],
    *,
    input_size: int,
    normalization: Normalization,
    batch_size: int,
    stats: ScanStats | None = None,
    augmentation: Augmentation | None = None,
    views: int = 1,
    label_map: Mapping[str, int] | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 1024,
    order: NDArray[np.intp] | None = None,
    n_images: int | None = None,
) -> tf.data.Dataset:
    """A batched, prefetched :class:`tf.data.Dataset` of model input from radiographs.

    Parameters
    ----------
    xrays
        The radiographs, read one at a time.
    input_size
        Side of the square model input.
    normalization
        ``"imagenet"`` or ``"symmetric"`` (see the module docstring).
    batch_size
        Images per batch.
    stats
        Filled with labels, ids, range problems (and a fingerprint, if asked) as the
        images stream past.
    augmentation
        The random changes made to each image (drawn in input order from a generator
        seeded with its seed, so every iteration, and a resumed run, sees the same
        views); ``None`` for none.
    views
        Each image is yielded this many times in a row (each with its own draw), for
        caching several augmented views in one pass.
    label_map
        ``{label: class index}``; when given, elements are ``(image, class index)`` pairs
        and unlabelled radiographs are an error (the caller checks labels first).
    shuffle_seed
        Shuffle images in a buffer of ``shuffle_buffer`` decoded images with this seed;
        ``None`` keeps the input order. A buffer only mixes nearby images, so prefer
        ``order`` when ``xrays`` supports indexing.
    order
        Read ``xrays[i]`` for ``i`` in this order (a full shuffle that holds only
        references); ``xrays`` must support ``len`` and indexing.
    n_images
        How many radiographs ``xrays`` yields, when known: lets Keras see the number of
        batches (a generator's is otherwise unknown).

    Returns
    -------
    tf.data.Dataset
        Batches of ``(batch, size, size, 3)`` float32, or ``(images, labels)`` pairs.
        Consume it inside :func:`original_errors` to get the exceptions reading
        ``xrays`` raises as they are, not wrapped in a TensorFlow error.
    """
    import tensorflow as tf

    geometric = augmentation is not None and augmentation.geometric
    contrast = augmentation is not None and bool(augmentation.contrast)
    index_of = dict(label_map) if label_map is not None else None
    failures = _GENERATOR_ERRORS.get()

    def generate() -> Iterator[tuple[NDArray[np.float32], np.int32, NDArray[np.float32]]]:
        try:
            yield from read()
        except Exception as exc:
            if failures is not None:
                failures.append(exc)
            raise

    def read() -> Iterator[tuple[NDArray[np.float32], np.int32, NDArray[np.float32]]]:
        draw = None
        if augmentation is not None:
            draw = functools.partial(augmentation.draw, np.random.default_rng(augmentation.seed))
        images: Iterable[XRay] = (
            xrays if order is None else (xrays[int(i)] for i in order)  # type: ignore[index]
        )
        for xray in images:
            if stats is not None:
                stats.see(xray)
            pixels = as_unit_float(xray.pixels)
            target = np.int32(index_of[str(xray.label)] if index_of is not None else -1)
            for _ in range(views):
                view = IDENTITY_VIEW if draw is None else draw()
                yield pixels, target, view

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((None, None), tf.float32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((5,), tf.float32),
        ),
    )
    if shuffle_seed is not None:
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

    def convert(image: Any, target: Any, view: Any) -> Any:
        x = _to_model_input(
            image,
            view,
            size=input_size,
            normalization=normalization,
            rotate=False,
            geometric=geometric,
            contrast=contrast,
        )
        return (x, target) if index_of is not None else x

    options = tf.data.Options()
    options.deterministic = True
    batches = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
        batch_size
    )
    if n_images is not None:
        batches = batches.apply(
            tf.data.experimental.assert_cardinality(-(-n_images * views // batch_size))
        )
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)
