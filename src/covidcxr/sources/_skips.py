"""What sources do with items they cannot use: raise, or skip and say so."""

from __future__ import annotations

from typing import Final, Literal, Protocol, cast, runtime_checkable

from attrs import frozen

from covidcxr.errors import ConfigurationError

__all__ = [
    "ON_ERROR_CHOICES",
    "OnError",
    "ReportsSkips",
    "Skipped",
    "SkippedItemsWarning",
    "check_on_error",
]

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: Final[tuple[str, ...]] = ("raise", "skip")


@frozen
class Skipped:
    """One item a source did not yield, and why.

    Parameters
    ----------
    path
        The file path, archive member or object key of the item.
    reason
        What was wrong with it, in words.

    Examples
    --------
    >>> Skipped("COVID/broken.png", "truncated PNG")
    Skipped(path='COVID/broken.png', reason='truncated PNG')
    """

    path: str
    reason: str


@runtime_checkable
class ReportsSkips(Protocol):
    """A source that lists the items it did not yield (every catalogued source does).

    Items appear in :attr:`skipped` when the layout leaves them out, or, with
    ``on_error="skip"``, once an iteration has found them unreadable.
    """

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        """The items not yielded, with reasons."""
        ...


class SkippedItemsWarning(UserWarning):
    """A source skipped items; the source's ``skipped`` attribute lists them with reasons."""


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` option.

    Raises
    ------
    ConfigurationError
        If it is neither ``"raise"`` nor ``"skip"``.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return cast(OnError, on_error)
