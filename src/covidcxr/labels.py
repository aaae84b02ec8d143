"""Canonical class labels and the mapping from the names public datasets use.

covidcxr knows three classes, always spelled the same way: ``"covid-19"``, ``"normal"``
and ``"pneumonia"``. Datasets spell them in many ways (``COVID``, ``Covid19``,
``Viral Pneumonia``, ``Non-COVID`` …); :func:`canonical_label` maps those spellings to the
canonical labels, case- and punctuation-insensitively.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Final, Literal

from covidcxr.errors import UnknownLabelError

__all__ = ["COVID19", "LABELS", "NORMAL", "PNEUMONIA", "Label", "canonical_label"]

Label = Literal["covid-19", "normal", "pneumonia"]

COVID19: Final = "covid-19"
NORMAL: Final = "normal"
PNEUMONIA: Final = "pneumonia"

#: The canonical labels, in the order classifiers use for their probability columns.
LABELS: Final[tuple[str, ...]] = (COVID19, NORMAL, PNEUMONIA)

# Keys are "squashed": lower case with everything but letters and digits removed, so
# "COVID-19", "Covid 19" and "covid_19" all meet at "covid19". Letters outside ASCII are
# kept (only punctuation, spaces and marks go), so "\u975eCOVID" ("non-COVID") or
# "Normal" spelt with a Cyrillic "o" do not pass for "COVID" or "Normal".
_ALIASES: Final[Mapping[str, str]] = {
    "covid": COVID19,
    "covid19": COVID19,
    "covid2019": COVID19,
    "sarscov2": COVID19,
    "normal": NORMAL,
    "healthy": NORMAL,
    "nofinding": NORMAL,
    "pneumonia": PNEUMONIA,
    "viralpneumonia": PNEUMONIA,
    "bacterialpneumonia": PNEUMONIA,
    "lungopacity": PNEUMONIA,
    "noncovid": PNEUMONIA,
    "noncovid19": PNEUMONIA,
}


def _squash(name: str) -> str:
    # NFKC folds compatibility forms (full-width letters and digits, ligatures) into plain letters.
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(char for char in folded if char.isalnum())


def canonical_label(name: str, aliases: Mapping[str, str] | None = None) -> str:
    """Map a dataset's class name to a canonical label.

    Parameters
    ----------
    name
        The class name as the dataset spells it (a folder name, a CSV value).
    aliases
        Extra or overriding spellings, ``{dataset name: canonical label}``. They are
        matched the same forgiving way as the built-in ones and take precedence.

    Returns
    -------
    str
        One of :data:`~covidcxr.LABELS`.

    Raises
    ------
    UnknownLabelError
        If ``name`` is not a string or matches no known spelling, or ``aliases`` maps to a
        label that is not canonical.

    Examples
    --------
    >>> canonical_label("COVID")
    'covid-19'
    >>> canonical_label("Viral Pneumonia")
    'pneumonia'
    >>> canonical_label("Lung_Opacity", aliases={"Lung_Opacity": "normal"})
    'normal'
    """
    if not isinstance(name, str):
        # A missing CSV cell arrives as None or NaN; it names no class.
        raise UnknownLabelError(f"class name must be a string, got {name!r}")
    table = dict(_ALIASES)
    for alias, label in (aliases or {}).items():
        if label not in LABELS:
            raise UnknownLabelError(
                f"label alias {alias!r} maps to {label!r}, which is not one of {LABELS}"
            )
        table[_squash(alias)] = label
    try:
        return table[_squash(name)]
    except KeyError:
        raise UnknownLabelError(
            f"class name {name!r} is not a known spelling of {', '.join(LABELS)}; "
            "pass label_aliases={name: label} to map it"
        ) from None
