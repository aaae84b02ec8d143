"""The error tree of covidcxr.

Every error raised on purpose by the library derives from :class:`CovidCXRError`, so a
caller can catch everything covidcxr-specific with one ``except`` clause. Subclasses say
*what kind* of thing went wrong; the message says *which* file, key or option and what to
do about it. Several errors also derive from the matching built-in exception
(``ValueError``, ``LookupError``, ``OSError``) so code written against the standard
library keeps working.
"""

from __future__ import annotations

__all__ = [
    "AccuracyGuardError",
    "ComponentOutputError",
    "ConfigurationError",
    "CovidCXRError",
    "DetectorOutputWarning",
    "DetectorServiceError",
    "DistributedJobError",
    "InvalidImageError",
    "InvalidRecordError",
    "ModelFormatError",
    "NoLungsFoundWarning",
    "OutputError",
    "OutputExistsError",
    "PluginError",
    "PluginLoadWarning",
    "PreprocessingMismatchWarning",
    "ResumeMismatchWarning",
    "SourceError",
    "SyntheticModelWarning",
    "TrainingDivergedError",
    "UnknownLabelError",
    "UnknownNameError",
    "WeightsUnavailableError",
]


class CovidCXRError(Exception):
    """Base class of every error that covidcxr raises on purpose."""


class InvalidImageError(CovidCXRError, ValueError):
    """Input is not a usable radiograph.

    Raised for unreadable, truncated or empty files, files whose content does not match
    their name, images too small to be a radiograph, decompression bombs, and arrays of
    the wrong shape or dtype.

    Parameters
    ----------
    message
        What is wrong, in words.
    source
        Where the image came from (a path, an archive member, an object key), if known.

    Attributes
    ----------
    message
        What is wrong, without the source (a skipped item's reason, beside its path).
    source
        As given.
    """

    def __init__(self, message: str, source: str | None = None) -> None:
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class UnknownLabelError(CovidCXRError, ValueError):
    """A class name could not be mapped to one of the canonical labels."""


class InvalidRecordError(CovidCXRError, ValueError):
    """A record was given a value it cannot hold.

    Raised by :class:`~covidcxr.Box`, :class:`~covidcxr.XRay`,
    :class:`~covidcxr.Prediction` and the other records for a negative or non-finite
    coordinate, a box outside its image, a score or probability outside [0, 1] or not a
    number (which would otherwise reach a JSON file as ``NaN``), or a status that
    contradicts the label. It is a ``ValueError`` too.
    """


class ConfigurationError(CovidCXRError, ValueError):
    """An option or a combination of options is invalid."""


class OutputExistsError(ConfigurationError, FileExistsError):
    """Writing would replace a file or folder that is already there.

    covidcxr never overwrites what the user owns unless asked: pass ``overwrite=True``
    (``--overwrite`` on the command line) or choose another path.
    """


class OutputError(CovidCXRError, OSError):
    """An output could not be written where it was asked for.

    Raised before the work starts when the place is not writable (a read-only file
    system, a folder without write permission, a full disk), and while writing when the
    file system refuses (``EROFS``, ``ENOSPC``, ``EDQUOT``, ``EACCES``, ``EPERM``). The
    message names the path and the reason; ``errno`` is the system's. Nothing is left
    half-written at the path: choose another location or free space, and run again.
    """


class PluginError(CovidCXRError):
    """A plugin failed to load, misdeclared a hook, or registered a clashing name."""


class UnknownNameError(PluginError, LookupError):
    """No plugin registered the requested detector, source scheme or component name."""


class ComponentOutputError(PluginError):
    """A component returned what its protocol does not allow.

    Raised when a preprocessor, lesion detector or dataset source (a plugin's, or one
    passed in) hands back something of the wrong kind: a detector's ``dict`` or ``None``
    where a list of :class:`~covidcxr.Detection` belongs, a ``detect_batch`` answer of
    the wrong length, a preprocessor's bare array or changed geometry without a
    recorded transform. The message names the component's class and the distribution
    that installed it: the fix belongs there, so report it to its authors.
    """


class SourceError(CovidCXRError, OSError):
    """A dataset source could not be read: missing bucket or folder, denied access, bad archive."""


class WeightsUnavailableError(CovidCXRError):
    """Pretrained weights could not be obtained (no network, wrong checksum, missing file)."""


class ModelFormatError(CovidCXRError, ValueError):
    """A saved model is incomplete, corrupt, or was written by an incompatible version."""


class AccuracyGuardError(CovidCXRError, ValueError):
    """An exported network is less accurate than the Keras model it was exported from.

    Raised by :func:`covidcxr.runtime.export` when, on the held-out images, accuracy drops
    by more than its ``max_accuracy_drop`` or a class's recall by more than its
    ``max_recall_drop`` (percentage points); nothing is written. :attr:`report` holds the
    figures (a :class:`covidcxr.runtime.GuardReport`).
    """

    def __init__(self, message: str, report: object = None) -> None:
        self.report = report
        super().__init__(message)


class TrainingDivergedError(CovidCXRError, ArithmeticError):
    """Training produced a non-finite loss or non-finite weights (NaN or infinity).

    Usually a learning rate that is too high, or input with non-finite values. Nothing is
    saved from such a run: a model with NaN weights would predict the same class for
    every image. Lower the learning rate (or check the data) and train again.
    """


class DetectorServiceError(CovidCXRError):
    """A remote detection service (such as Watson Visual Recognition) refused or failed a request.

    Parameters
    ----------
    message
        What went wrong, without credentials.
    status_code
        The HTTP status code, when the service answered.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class DistributedJobError(CovidCXRError, RuntimeError):
    """A job on a distributed engine (Ray) failed for a reason outside covidcxr.

    A covidcxr error met by a worker (an unreadable image with ``on_error="raise"``, a
    source that refused the worker's credentials) is raised as itself instead; this one
    carries the engine's own account (a worker that could not start, a lost cluster).
    """


class SyntheticModelWarning(UserWarning):
    """The model was trained on synthetic images (phantoms), not on radiographs.

    Its predictions show that the software runs; they say nothing about a real chest
    X-ray. :meth:`covidcxr.Pipeline.predict` warns once per call with such a model, and
    its model card says so at the top.
    """


class ResumeMismatchWarning(UserWarning):
    """A training resumed from a checkpoint under a setting that changes its last bits.

    The CPU thread count changes the order of floating-point sums: the resumed run ends
    close to, but not bit for bit like, an uninterrupted one.
    """


class DetectorOutputWarning(UserWarning):
    """A lesion detector returned boxes that lie wholly outside the image.

    They are dropped (boxes that cross the border are cut to it, silently): a box
    outside the image usually means the detector answered in another coordinate system
    (fractions of the side, or the radiograph before preprocessing).
    """


class PluginLoadWarning(UserWarning):
    """An installed plugin could not load and was left out; the others work.

    The message names each such plugin, its distribution and why, and the two ways out:
    uninstall it, or list the plugins to load in ``COVIDCXR_PLUGINS``. Also issued when
    ``COVIDCXR_PLUGINS`` names a plugin that is not installed.
    """


class NoLungsFoundWarning(UserWarning):
    """A pipeline's lung stage found no lung fields in some radiographs.

    They were classified on the whole frame, and their predictions are marked uncertain.
    """


class PreprocessingMismatchWarning(UserWarning):
    """A model is given images unlike those it was trained on.

    Issued, once per call, by a classifier or detector whose input records another
    preprocessing than its training images did, or whose input's intensity statistics
    (brightness, contrast, local contrast, saturation) clearly differ from the training
    images': raw pixels fed to a model trained on Gaussian + CLAHE output, or CLAHE with
    another clip limit. Such a model still answers, but worse, and nothing in its answer
    says so. Prepare
    the input as the model's training input was; a :class:`~covidcxr.Pipeline` refuses
    outright to pair a model with a preprocessor other than the one it was trained with.
    """
