"""What sources do with items they cannot use: raise, or skip and say so."""

from __future__ import annotations

from typing import Final, Literal, Protocol, cast, runtime_checkable

from attrs import frozen

from covidcxr.errors import ConfigurationError, InvalidImageError

__all__ = [
    "ON_ERROR_CHOICES",
    "OnError",
    "ReportsSkips",
    "Skipped",
    "SkippedItemsWarning",
    "check_on_error",
    "skip_reason",
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
    """A source skipped items; the source's ``skipped`` attribute lists them with reasons.

    Its ``console_text`` is the message without the pointer to that attribute: what the
    command line prints (it lists the items itself, in its own terms).
    """

    console_text: str

    @classmethod
    def of(cls, summary: str, where_listed: str) -> SkippedItemsWarning:
        """The warning ``summary; where_listed``, whose ``console_text`` is ``summary``."""
        warning = cls(f"{summary}; {where_listed}")
        warning.console_text = summary
        return warning


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


def skip_reason(error: InvalidImageError, item_id: str) -> str:
    """Why item ``item_id`` was skipped, without repeating ``item_id``.

    The error names its source; when that is the item itself (the path beside which the
    reason is shown), only the message is kept. A source that is something else, such as
    the item's mask (``"a.png (lung mask)"``) or a mask file, stays in the reason: it says
    which file to look at.

    Examples
    --------
    >>> skip_reason(InvalidImageError("the file is empty", "a/b.png"), "a/b.png")
    'the file is empty'
    >>> skip_reason(InvalidImageError("truncated PNG", "a/b.png (lung mask)"), "a/b.png")
    'a/b.png (lung mask): truncated PNG'
    """
    text = str(error)
    return text.removeprefix(f"{item_id}: ") if error.source == item_id else text
