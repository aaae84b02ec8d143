"""The shipped models as reStructuredText, for the documentation's model-zoo page.

The page's ``shipped-models`` directive (``docs/conf.py``) inserts :func:`models_rst` at
build time, so the page always shows the manifests and cards of the models in the package
it documents.
"""

from __future__ import annotations

import os
import textwrap

from covidcxr.pretrained._registry import available, card, check_sentence, format_size

__all__ = ["models_rst"]


def _section(title: str, underline: str) -> list[str]:
    return [title, underline * len(title), ""]


def models_rst(root: str | os.PathLike[str] | None = None, *, underline: str = "~") -> str:
    """A section per shipped model: summary, size, rebuild command, check, and its card.

    Parameters
    ----------
    root
        As for :func:`~covidcxr.pretrained.available`.
    underline
        The character that underlines each model's section title.

    Returns
    -------
    str
        reStructuredText; with no model shipped, a paragraph that says so.

    Examples
    --------
    >>> import tempfile
    >>> print(models_rst(tempfile.mkdtemp()))
    No model is shipped with this release of covidcxr yet...
    """
    models = available(root)
    if not models:
        return (
            "No model is shipped with this release of covidcxr yet: train one with "
            ":meth:`covidcxr.Pipeline.fit` (see :doc:`training`), or add one to the package "
            "with ``python -m covidcxr.pretrained add``.\n"
        )
    lines: list[str] = []
    for info in models.values():
        model_card = card(info.name, root)
        check = info.check
        lines += _section(f"``{info.name}``", underline)
        lines += [
            info.summary,
            "",
            f":Size: {info.size} as installed ({format_size(info.original_size_bytes)} as "
            f"saved); Keras weights stored as {info.weights}, loaded as float32",
            f":Files: {len(info.files)}, each checked against its SHA-256 before loading",
            *(
                [f":Also called: {', '.join(f'``{alias}``' for alias in info.aliases)}"]
                if info.aliases
                else []
            ),
            f":Packaged with: covidcxr {info.covidcxr_version}, Keras {info.keras_version}",
        ]
        if check:
            lines.append(f":Precision check: {check_sentence(check, info.weights)}")
        lines += [
            "",
            "Rebuild it:",
            "",
            ".. code-block:: console",
            "",
            f"   $ {info.build_command}",
            "",
            "Its model card (``model_card.md``):",
            "",
            ".. code-block:: markdown",
            "",
            textwrap.indent(model_card.text.rstrip("\n"), "   "),
            "",
        ]
    return "\n".join(lines) + "\n"
