"""A pipeline's configuration: which components, with which options.

See :mod:`covidcxr.pipeline` for the TOML form.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Self

import attrs
from attrs import field, frozen

from covidcxr._plain import option_value, plain_data
from covidcxr.errors import ConfigurationError, UnknownNameError
from covidcxr.lungs import LungCrop
from covidcxr.plugins import Registration, check_options, did_you_mean

__all__ = ["ComponentSpec", "PipelineConfig", "TrustConfig"]

# Options that look like secrets are never written into a saved pipeline.
# An option whose name holds one of these is a credential. "access_key" is for an HMAC
# key's id (aws_access_key_id), half of the pair, which the COS source keeps secret too.
_SECRET_WORDS: Final = (
    "apikey",
    "api_key",
    "access_key",
    "password",
    "secret",
    "token",
    "credential",
    "auth",
)
# Options that say where a run writes its progress on the machine that trained: not what the
# model is, and a path that means nothing (or the wrong thing) anywhere else.
_RUN_WIRING: Final = frozenset({"checkpoint_dir", "on_epoch_end"})
COMPONENT_KEYS: Final = ("preprocessor", "classifier", "detector")
_CONFIG_KEYS: Final = frozenset({*COMPONENT_KEYS, "evaluation", "trust", "lungs"})
_TRUST_KEYS: Final = frozenset({"gate", "calibrate", "sensitivity", "coverage"})
_EVALUATION_KEYS: Final = frozenset({"n_bootstrap", "confidence_level", "n_bins", "seed"})


def _frozen_options(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


def _lung_options(value: Any) -> Mapping[str, Any] | None:
    """A ``[lungs]`` table: ``None``, ``false`` or ``name = "none"`` for no lung stage."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"[lungs] must be a table of options, true or false; got {type(value).__name__}"
        )
    name = value.get("name", "unet")
    if isinstance(name, str) and option_value(name) is None:  # "none" in any case
        return None
    if name != "unet":
        raise ConfigurationError(
            f"[lungs] name = {name!r}: the lung stage is 'unet' (covidcxr.lungs.LungSegmenter) "
            "or 'none'"
        )
    options = {k: v for k, v in value.items() if k != "name"}
    if "segmenter" in options and isinstance(options["segmenter"], Mapping):
        options["segmenter"] = dict(options["segmenter"])
    return options


@frozen
class ComponentSpec:
    """A component chosen by its registered name, with the options for its factory.

    Examples
    --------
    >>> ComponentSpec.parse({"name": "vgg19", "epochs": 3, "weights": "none"}, "classifier")
    ComponentSpec(name='vgg19', options={'epochs': 3, 'weights': None})
    """

    name: str
    options: Mapping[str, Any] = field(factory=dict, converter=_frozen_options)

    @classmethod
    def parse(cls, table: Mapping[str, Any], where: str) -> Self:
        """Read ``{"name": ..., **options}``; ``where`` names the table in errors."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"[{where}] must be a table, got {type(table).__name__}")
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"[{where}] needs a 'name' (a registered {where} name)")
        options = {k: option_value(v) for k, v in table.items() if k != "name"}
        return cls(name, options)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a table: ``{"name": ..., **options}``."""
        return {"name": self.name, **self.options}


def _number_in(value: Any, low: float, high: float, *, up_to: bool = False) -> bool:
    """Whether ``value`` is a number in ``(low, high)``, or ``(low, high]`` with ``up_to``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    number = float(value)
    return low < number < high or (up_to and number == high)


#: The calibration methods ``[trust] calibrate`` names (``true`` is the first).
CALIBRATION_METHODS: Final = ("temperature", "bias-corrected")


def _check_calibrate(value: object) -> None:
    if isinstance(value, bool) or value in CALIBRATION_METHODS:
        return
    raise ConfigurationError(
        f"[trust] calibrate must be true, false, 'temperature' or 'bias-corrected', got {value!r}"
    )


@frozen
class TrustConfig:
    """How a pipeline earns trust: the input gate, calibration, operating points.

    The ``[trust]`` table of a configuration. Everything is fitted by
    :meth:`~covidcxr.Pipeline.fit` (the gate from the training radiographs alone; the
    rest on the validation radiographs, so it needs them) and saved with the model.

    Parameters
    ----------
    gate
        ``True`` (the default) fits :class:`~covidcxr.gate.ChestXrayGate` with its default
        options, a table fits it with those options, ``False`` fits no gate.
    calibrate
        How the probabilities are calibrated on the validation radiographs: ``True`` (the
        default) or ``"temperature"`` fits temperature scaling
        (:class:`~covidcxr.evaluate.TemperatureScaling`, which never changes a predicted
        class); ``"bias-corrected"`` fits a temperature and one bias per class
        (:class:`~covidcxr.evaluate.BiasCorrectedTemperatureScaling`, which can);
        ``False`` fits none.
    sensitivity
        Per-class operating points: ``{"covid-19": 0.95}`` sets the smallest probability
        at which COVID-19 is called so that validation recall reaches 0.95.
    coverage
        Abstain (label ``"uncertain"``) on the least confident radiographs, keeping this
        share of the validation radiographs; ``None`` (the default) never abstains.

    Examples
    --------
    >>> TrustConfig.from_dict({"sensitivity": {"covid-19": 0.95}}).sensitivity
    {'covid-19': 0.95}
    >>> TrustConfig.from_dict({"gate": False}).gate_options() is None
    True
    >>> TrustConfig.from_dict({"calibrate": "bias-corrected"}).calibration_method()
    'bias-corrected'
    """

    gate: bool | Mapping[str, Any] = True
    calibrate: bool | str = field(default=True, validator=lambda _, __, v: _check_calibrate(v))
    sensitivity: Mapping[str, float] = field(factory=dict, converter=_frozen_options)
    coverage: float | None = None

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> Self:
        """Read a ``[trust]`` table, checking every key and value.

        Raises
        ------
        ConfigurationError
            Naming the key, what it should be, and the closest valid key for a typo.
        """
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"[trust] must be a table, got {type(table).__name__}")
        bad = sorted(set(table) - _TRUST_KEYS)
        if bad:
            raise ConfigurationError(
                f"[trust] has no option {bad[0]!r}.{did_you_mean(bad[0], _TRUST_KEYS)} Its "
                f"options: {', '.join(sorted(_TRUST_KEYS))}"
            )
        gate = table.get("gate", True)
        if not isinstance(gate, (bool, Mapping)):
            raise ConfigurationError(
                f"[trust] gate must be true, false or a table of options, got {gate!r}"
            )
        calibrate = table.get("calibrate", True)
        _check_calibrate(calibrate)
        sensitivity = table.get("sensitivity", {})
        if not isinstance(sensitivity, Mapping) or not all(
            isinstance(k, str) and _number_in(v, 0.0, 1.0, up_to=True)
            for k, v in sensitivity.items()
        ):
            raise ConfigurationError(
                "[trust] sensitivity must map class names to target recalls in (0, 1], "
                f'e.g. {{"covid-19" = 0.95}}; got {sensitivity!r}'
            )
        coverage = option_value(table.get("coverage"))
        if coverage is not None and not _number_in(coverage, 0.0, 1.0, up_to=True):
            raise ConfigurationError(
                f"[trust] coverage must be a share in (0, 1] or none, got {coverage!r}"
            )
        return cls(
            dict(gate) if isinstance(gate, Mapping) else gate,
            calibrate,
            {k: float(v) for k, v in sensitivity.items()},
            None if coverage is None else float(coverage),
        )

    def calibration_method(self) -> str | None:
        """``"temperature"``, ``"bias-corrected"``, or ``None`` for no calibration."""
        if self.calibrate is False:
            return None
        return "temperature" if self.calibrate is True else str(self.calibrate)

    def gate_options(self) -> dict[str, Any] | None:
        """The options of the gate to fit, or ``None`` for no gate."""
        if self.gate is False:
            return None
        return {} if self.gate is True else dict(self.gate)

    def to_dict(self) -> dict[str, Any]:
        """The table as plain data (``coverage`` left out when ``None``, as TOML has no null)."""
        data: dict[str, Any] = {
            "gate": self.gate if isinstance(self.gate, bool) else dict(self.gate),
            "calibrate": self.calibrate,
            "sensitivity": dict(self.sensitivity),
        }
        if self.coverage is not None:
            data["coverage"] = self.coverage
        return data


def _as_trust(value: TrustConfig | Mapping[str, Any]) -> TrustConfig:
    return value if isinstance(value, TrustConfig) else TrustConfig.from_dict(value)


@frozen
class PipelineConfig:
    """What a :class:`Pipeline` is made of, as plain data (from TOML, JSON or Python).

    Parameters
    ----------
    preprocessor
        ``None`` for no preprocessing.
    classifier
        Required.
    detector
        ``None`` for classification only.
    evaluation
        Options of :class:`~covidcxr.ClassificationEvaluator`: ``n_bootstrap``,
        ``confidence_level``, ``n_bins``, ``seed``.
    trust
        The input gate, calibration and operating points (a :class:`TrustConfig` or its
        table).
    lungs
        The lung stage's options (see :class:`~covidcxr.lungs.LungCrop`, with a
        ``segmenter`` table of :class:`~covidcxr.lungs.LungSegmenter` options), or
        ``None`` (the default) for none: the models see the whole frame. ``true`` in a
        file means the defaults.

    Examples
    --------
    >>> config = PipelineConfig.from_dict({
    ...     "classifier": {"name": "vgg19", "epochs": 2},
    ...     "detector": {"name": "none"},
    ... })
    >>> config.preprocessor.name, config.classifier.options, config.detector
    ('gaussian-clahe', {'epochs': 2}, None)
    """

    preprocessor: ComponentSpec | None = ComponentSpec("gaussian-clahe")
    classifier: ComponentSpec = ComponentSpec("vgg19")
    detector: ComponentSpec | None = ComponentSpec("local")
    evaluation: Mapping[str, Any] = field(factory=dict, converter=_frozen_options)
    trust: TrustConfig = field(factory=TrustConfig, converter=_as_trust)
    lungs: Mapping[str, Any] | None = field(default=None, converter=_lung_options)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Read a configuration; missing tables keep their defaults.

        Raises
        ------
        ConfigurationError
            For an unknown table, component option or evaluation option (the message
            names the table and the key and suggests the closest valid one), a table
            without ``name``, or an ``[evaluation]`` value of the wrong type or range (a
            string where a number belongs).
        UnknownNameError
            For a component name that no plugin registered (the closest is suggested).
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"a configuration must be a table of tables, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - _CONFIG_KEYS, key=str)
        if unknown:
            tables = ", ".join(f"[{key}]" for key in sorted(_CONFIG_KEYS))
            raise ConfigurationError(
                f"unknown configuration table [{unknown[0]}]."
                f"{did_you_mean(str(unknown[0]), _CONFIG_KEYS)} The tables are {tables}"
            )
        defaults = cls()
        specs: dict[str, ComponentSpec | None] = {}
        for key in COMPONENT_KEYS:
            if key not in data:
                specs[key] = getattr(defaults, key)
                continue
            table = data[key]
            # "none" in any case, as every option reads it (covidcxr._plain.option_value).
            if table is None or (
                isinstance(table, Mapping)
                and "name" in table
                and option_value(table["name"]) is None
            ):
                if key == "classifier":
                    raise ConfigurationError("[classifier] cannot be 'none': a pipeline classifies")
                specs[key] = None
            else:
                specs[key] = spec = ComponentSpec.parse(table, key)
                _check_component(key, spec)
        evaluation = _evaluation_options(data.get("evaluation", {}))
        classifier = specs["classifier"]
        if classifier is None:  # pragma: no cover - refused above
            raise ConfigurationError("[classifier] is required")
        trust = TrustConfig.from_dict(data.get("trust", {}))
        lungs = _lung_options(data.get("lungs"))
        if lungs is not None:
            LungCrop.from_options(lungs)  # refuses unknown options, naming them
        return cls(specs["preprocessor"], classifier, specs["detector"], evaluation, trust, lungs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Self:
        """Read a TOML configuration file.

        Raises
        ------
        ConfigurationError
            If the file cannot be read or parsed, or holds an unknown table or option;
            the message names the file, the table and the key.
        UnknownNameError
            For a component name that no plugin registered, naming the file.
        """
        try:
            with Path(path).open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise ConfigurationError(f"{path}: cannot read the configuration: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{path}: invalid TOML: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc
        except UnknownNameError as exc:
            raise UnknownNameError(f"{path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (``None`` for absent components)."""
        return {
            "preprocessor": self.preprocessor.to_dict() if self.preprocessor else None,
            "classifier": self.classifier.to_dict(),
            "detector": self.detector.to_dict() if self.detector else None,
            "evaluation": dict(self.evaluation),
            "trust": self.trust.to_dict(),
            "lungs": plain_data(dict(self.lungs)) if self.lungs is not None else None,
        }


def _is_integer(value: Any, low: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# What each [evaluation] option must be, checked when the configuration is read, not after
# training when the evaluator first uses it.
_EVALUATION_CHECKS: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "n_bootstrap": (lambda v: _is_integer(v, 0), "an integer >= 0 (0 skips the bootstrap)"),
    "confidence_level": (lambda v: _number_in(v, 0.0, 1.0), "a number in (0, 1), e.g. 0.95"),
    "n_bins": (lambda v: _is_integer(v, 1), "an integer >= 1"),
    "seed": (lambda v: _is_integer(v, 0), "an integer >= 0"),
}


def _evaluation_options(table: Any) -> dict[str, Any]:
    """Read an ``[evaluation]`` table, checking every key and the type of every value.

    Raises
    ------
    ConfigurationError
        For a table that is not one, an unknown option (with the closest valid one) or a
        value of the wrong type or range (a string where a number belongs, say).
    """
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"[evaluation] must be a table, got {type(table).__name__}")
    bad = sorted(set(table) - _EVALUATION_KEYS, key=str)
    if bad:
        raise ConfigurationError(
            f"[evaluation] has no option {bad[0]!r}.{did_you_mean(str(bad[0]), _EVALUATION_KEYS)}"
            f" Its options: {', '.join(sorted(_EVALUATION_KEYS))}"
        )
    for key, value in table.items():
        valid, expected = _EVALUATION_CHECKS[key]
        if not valid(value):
            raise ConfigurationError(f"[evaluation] {key} must be {expected}, got {value!r}")
    return dict(table)


def _check_component(table: str, spec: ComponentSpec) -> None:
    """Refuse an unregistered name or an option its factory does not take.

    The message names the table and the key, with the closest valid choice.
    """
    try:
        check_options(table, spec.name, spec.options, where=f"[{table}] {spec.name!r}")
    except UnknownNameError as exc:
        raise UnknownNameError(f"[{table}] name = {spec.name!r}: {exc}") from exc


def registered_name(obj: object, registry: Mapping[str, Registration], kind: str) -> str:
    for registration in registry.values():
        if registration.refers_to(type(obj)):
            return registration.name
    raise ConfigurationError(
        f"the {kind} {type(obj).__name__} is not registered under any name, so a saved "
        f"pipeline could not build it again; register it through a plugin "
        f"(covidcxr_register_{kind}s) or pass it by name"
    )


def object_options(obj: object, kind: str) -> dict[str, Any]:
    get_params = getattr(obj, "get_params", None)
    if callable(get_params):
        return dict(get_params())
    if attrs.has(type(obj)):
        return attrs.asdict(obj, recurse=False)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"cannot read the options of the {kind} {type(obj).__name__} (it has neither "
        "get_params() nor attrs fields); pass it by name with options instead"
    )


def plain_options(options: Mapping[str, Any], where: str, *, strict: bool) -> dict[str, Any]:
    """Options as JSON data, without anything that looks like a credential.

    Callables (``on_epoch_end`` and other hooks, also when unset) and ``checkpoint_dir`` are
    run-time wiring, not configuration: they are left out, in nested tables too
    (``[lungs.segmenter]``).
    ``strict``: any other value JSON cannot hold is an error (saving); otherwise its
    ``repr`` is shown instead (describing, for reports).
    """
    kept: dict[str, Any] = {}
    for key, value in options.items():
        secret = any(word in key.lower() for word in _SECRET_WORDS)
        if secret or callable(value) or key in _RUN_WIRING:
            continue
        if isinstance(value, Mapping) and all(isinstance(name, str) for name in value):
            kept[key] = plain_options(value, f"{where}.{key}", strict=strict)
            continue
        plain = plain_data(value, unknown="keep")
        try:
            json.dumps(plain)
        except TypeError as exc:
            if not strict:
                plain = plain_data(value)
            else:
                raise ConfigurationError(
                    f"{where} option {key!r} = {value!r} cannot be saved as JSON; pass a "
                    "plain value (number, string, list, table)"
                ) from exc
        kept[key] = plain
    return kept
