"""Keeping credentials out of messages: redact every encoding, refuse them in URLs.

A service that echoes a request back in its error (an IAM token server repeating the form
body, a proxy repeating a URL, an SDK printing a Basic ``Authorization`` header) shows a
secret *encoded*: URL-encoded (``+`` as ``%2B``, ``/`` as ``%2F``, ``=`` as ``%3D``,
either case of hex digit), or in base64, alone or inside a longer base64 text; a message
that quotes a value shows it escaped, as ``repr`` (of the text or of its bytes) or JSON
writes it (a token read from a file with its newline, a password with an accent).
:class:`Redactor` replaces all of these. :func:`refuse_url_credentials` refuses URLs
that carry ``user:password@`` before they can reach a repr or an error message.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus

from covidcxr.errors import ConfigurationError

__all__ = ["Redactor", "refuse_url_credentials"]

#: The mask that replaces a secret.
MASK: Final = "***"
# Shorter base64 fragments could match unrelated text.
_MIN_FRAGMENT: Final = 8
_PERCENT: Final = re.compile(r"%([0-9A-F]{2})")
# What comes before the authority: "scheme://", or "//" alone (a scheme-relative URL).
_SCHEME: Final = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//")


def _url_encodings(secret: str) -> set[str]:
    return {quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="/")}


def _escaped_forms(secret: str) -> set[str]:
    """``secret`` between the quotes of its ``repr``, its bytes' ``repr`` or a JSON string."""
    as_json = json.dumps(secret)[1:-1]
    return {
        repr(secret)[1:-1],
        repr(secret.encode())[2:-1],
        as_json,
        as_json.replace("/", "\\/"),  # some JSON writers escape "/" too
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }


def _base64_fragments(secret: str) -> set[str]:
    """Text that appears in any base64 encoding of a text containing ``secret``.

    In a longer text the secret starts at byte offset 0, 1 or 2 of a 3-byte group; for
    each, the characters whose bits come from the secret alone are the same whatever
    surrounds it.
    """
    data = secret.encode()
    fragments: set[str] = set()
    for pad in range(3):
        start = (pad * 8 + 5) // 6  # the first character with no bits of the padding
        end = ((pad + len(data)) * 8) // 6  # the last one with no bits of what follows
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            fragment = encode(b"\0" * pad + data).decode()[start:end]
            if len(fragment) >= _MIN_FRAGMENT:
                fragments.add(fragment)
    return fragments


def _pattern_for(text: str) -> str:
    # Percent-escapes match either case of hex digit (%2B and %2b).
    pieces = _PERCENT.split(text)
    return "".join(
        re.escape(piece) if index % 2 == 0 else f"%(?i:{piece})"
        for index, piece in enumerate(pieces)
    )


class Redactor:
    """Replaces secrets in text, raw or encoded; holds them only to recognise them.

    Parameters
    ----------
    secrets
        The credential values; empty ones and ``None`` are ignored.

    Examples
    --------
    >>> redact = Redactor(["a+b/c=d"])
    >>> redact("apikey=a%2Bb%2Fc%3Dd and a+b/c=d")
    'apikey=*** and ***'
    >>> Redactor(["pässwörd"])(repr("pässwörd".encode()))
    "b'***'"
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= {secret} | _url_encodings(secret) | _base64_fragments(secret)
                forms |= _escaped_forms(secret)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_pattern_for, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({MASK})"


def refuse_url_credentials(url: str | None, option: str) -> None:
    """Raise :class:`ConfigurationError` if ``url`` carries ``user[:password]@``.

    The error names ``option`` and never repeats the user info.
    """
    if not url:
        return
    authority = re.split(r"[/?#]", _SCHEME.sub("", url.strip(), count=1), maxsplit=1)[0]
    if "@" in authority:
        raise ConfigurationError(
            f"{option} must not carry credentials (user:password@ before the host); pass "
            "them through the credential options or environment variables instead"
        )
