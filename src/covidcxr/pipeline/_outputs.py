"""Tables of results, written as they are computed: CSV, JSON Lines or Parquet.

A prediction run over 100,000 radiographs must not hold 100,000 results in memory before
writing them, so the writers here take rows one at a time (from
:meth:`~covidcxr.Pipeline.iter_predict`, say) and write them at once: CSV through the
:mod:`csv` module, JSON Lines one object per line, Parquet in row groups through
pyarrow's ``ParquetWriter`` (the optional ``parquet`` extra). The file is written beside
its target and renamed into place at the end (:func:`covidcxr.files.atomic_write`): a run
that fails half-way leaves no half-written table, and an existing file is replaced only
when asked.

Rows are flat where the format is flat. A CSV or Parquet row of a prediction has ``id``,
``label``, ``status`` (``accepted``, ``uncertain`` or ``rejected``), ``probability`` (of
that label, or the largest when uncertain), one ``p_<class>`` column per class (empty for
a radiograph the input gate rejected), ``ood_score`` and ``reason`` (the gate's score, and
why a radiograph was rejected or left uncertain), ``n_lesions``, ``detections``: a list
of ``{label, score, box: {x, y, width, height}}`` in Parquet, the same list as JSON text
in CSV (both empty for a radiograph the input gate rejected: the detector never saw it),
and, from a pipeline that measures severity, ``severity_right``,
``severity_left``, ``severity_total``, ``severity_right_grade``, ``severity_left_grade`` and
``severity_score``. A JSON Lines row is the
record's own JSON form (:meth:`~covidcxr.Prediction.to_dict`), as ``--json`` prints it.
Predictions of a model trained on synthetic phantoms carry one more column (or key),
``model_note``, which says so (see :func:`~covidcxr.pipeline.model_note`).

A CSV text cell that a spreadsheet would run as a formula (one starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return: a file named ``=HYPERLINK(...).png``) is written
with a leading ``'``, so the spreadsheet shows it as text; JSON Lines and Parquet hold
every value as it is.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

from covidcxr.errors import ConfigurationError, OutputExistsError
from covidcxr.files import atomic_write
from covidcxr.records import REJECTED, Detection, Prediction, XRay, detection_to_dict
from covidcxr.sources import Skipped

__all__ = [
    "OUTPUT_FORMATS",
    "DetectionsTable",
    "OutputFormat",
    "detections_table",
    "output_format",
    "prediction_columns",
    "prediction_row",
    "skipped_path_for",
    "write_predictions",
    "write_skipped",
]

OutputFormat = Literal["csv", "jsonl", "parquet"]
#: The table formats the writers know, chosen from the file's suffix unless named.
OUTPUT_FORMATS: Final[tuple[str, ...]] = ("csv", "jsonl", "parquet")
_SUFFIXES: Final[Mapping[str, OutputFormat]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
# Rows per Parquet row group: large enough for good compression and fast scans, small
# enough that the rows waiting for their group take a few megabytes.
_ROW_GROUP: Final = 8192

# A column's kind: how CSV writes it and which Arrow type Parquet gives it.
_Kind = Literal["string", "int", "float", "detections"]


def output_format(path: str | os.PathLike[str], format: str | None = None) -> OutputFormat:
    """The table format of ``path``: ``format`` if given, else from its suffix.

    Raises
    ------
    ConfigurationError
        If ``format`` is not one of :data:`OUTPUT_FORMATS`, or it is ``None`` and the
        suffix is not ``.csv``, ``.jsonl`` (``.ndjson``) or ``.parquet``.

    Examples
    --------
    >>> output_format("out/predictions.jsonl")
    'jsonl'
    >>> output_format("predictions.txt", "csv")
    'csv'
    """
    if format is not None:
        if format not in OUTPUT_FORMATS:
            raise ConfigurationError(
                f"unknown output format {format!r}; choose one of {', '.join(OUTPUT_FORMATS)}"
            )
        return cast(OutputFormat, format)
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigurationError(
            f"{path}: cannot tell the output format from the suffix {suffix or '(none)'!r}; "
            "name the file .csv, .jsonl or .parquet"
        )
    return _SUFFIXES[suffix]


def _detections_type(pa: Any) -> Any:
    box = pa.struct(
        [(name, pa.float64()) for name in ("x", "y", "width", "height")],
    )
    return pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64()), ("box", box)]))


def _arrow_schema(columns: Sequence[tuple[str, _Kind]]) -> Any:
    pa = _pyarrow()
    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "detections": _detections_type(pa),
    }
    return pa.schema([(name, types[kind]) for name, kind in columns])


def _pyarrow() -> Any:
    try:
        import pyarrow as pa  # noqa: PLC0415 - the optional "parquet" extra
        import pyarrow.parquet  # noqa: PLC0415 - makes pa.parquet available
    except ImportError as exc:
        raise ConfigurationError(
            "writing Parquet needs pyarrow: pip install 'covidcxr[parquet]' "
            "(or write .csv or .jsonl)"
        ) from exc
    return pa


# Characters that open a formula when a spreadsheet (Excel, LibreOffice, Sheets) opens a
# CSV: a file name such as ``=HYPERLINK(...).png`` would run as one (CSV injection).
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")
# Characters that JSON leaves as they are with ensure_ascii=False but that many line
# readers (Python's str.splitlines, JavaScript before ES2019) take for line breaks: escaped,
# so that one JSON Lines row stays one line.
_JSON_LINE_BREAKS: Final = str.maketrans(
    {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
)


def _csv_cell(value: Any, kind: _Kind) -> Any:
    """``value`` as a CSV cell: detections as JSON, text that would open a formula quoted.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
    leading ``'``, the usual guard against CSV injection: a spreadsheet shows the text
    instead of evaluating it.
    """
    if value is None:
        return None
    if kind == "detections":
        return json.dumps(value)
    if kind == "string" and isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return f"'{value}"
    return value


class _Table:
    """One open output table; :meth:`write` adds a row (flat) or a document (JSON Lines)."""

    def __init__(
        self, handle: IO[bytes], fmt: OutputFormat, columns: Sequence[tuple[str, _Kind]]
    ) -> None:
        self.format = fmt
        self.columns = tuple(columns)
        self.rows = 0
        self._handle = handle
        self._text: io.TextIOWrapper | None = None
        self._csv: Any = None
        self._parquet: Any = None
        self._pending: list[dict[str, Any]] = []
        if fmt == "csv":
            self._text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            self._csv = csv.writer(self._text)
            self._csv.writerow([name for name, _ in self.columns])
        elif fmt == "parquet":
            pa = _pyarrow()
            self._schema = _arrow_schema(self.columns)
            self._parquet = pa.parquet.ParquetWriter(handle, self._schema)

    def write(self, row: Mapping[str, Any], document: Mapping[str, Any]) -> None:
        if self.format == "jsonl":
            text = json.dumps(document, ensure_ascii=False).translate(_JSON_LINE_BREAKS)
            self._handle.write(text.encode("utf-8"))
            self._handle.write(b"\n")
        elif self.format == "csv":
            self._csv.writerow([_csv_cell(row[name], kind) for name, kind in self.columns])
        else:
            self._pending.append(dict(row))
            if len(self._pending) >= _ROW_GROUP:
                self._flush_group()
        self.rows += 1

    def _flush_group(self) -> None:
        pa = _pyarrow()
        self._parquet.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
        self._pending = []

    def finish(self) -> None:
        """Write what is pending and let go of the file (which the caller then closes)."""
        if self._parquet is not None and self._pending:
            self._flush_group()
        self.release()

    def release(self) -> None:
        """Let go of the file without writing what is pending (after an error)."""
        if self._text is not None:
            self._text.flush()
            self._text.detach()  # the atomic writer closes the binary file itself
            self._text = None
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


def _check_target(path: str | os.PathLike[str], fmt: OutputFormat, *, overwrite: bool) -> None:
    """Fail now, before any work is done, if the table could not be written."""
    target = Path(path)
    if not overwrite and target.exists():
        raise OutputExistsError(
            f"{target} already exists; choose another file or pass overwrite=True "
            "(--overwrite) to replace it"
        )
    if fmt == "parquet":
        _pyarrow()


@contextlib.contextmanager
def _open_table(
    path: str | os.PathLike[str],
    fmt: OutputFormat,
    columns: Sequence[tuple[str, _Kind]],
    *,
    overwrite: bool,
) -> Iterator[_Table]:
    _check_target(path, fmt, overwrite=overwrite)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, overwrite=overwrite) as handle:
        table = _Table(handle, fmt, columns)
        try:
            yield table
        except BaseException:
            table.release()
            raise
        table.finish()


def _detection_dicts(detections: Iterable[Detection]) -> list[dict[str, Any]]:
    return [detection_to_dict(detection) for detection in detections]


def write_predictions(
    predictions: Iterable[Prediction],
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    classes: Sequence[str] | None = None,
    overwrite: bool = False,
    note: str | None = None,
    severity: bool = False,
) -> int:
    """Write predictions to a CSV, JSON Lines or Parquet table, one row per radiograph.

    Rows are written as ``predictions`` yields them, so a generator such as
    :meth:`~covidcxr.Pipeline.iter_predict` runs in bounded memory however many images it
    covers. The file appears only when every row is written (see the module docstring for
    the columns).

    Parameters
    ----------
    predictions
        The predictions, in any number.
    path
        The file to write; its suffix (``.csv``, ``.jsonl``, ``.parquet``) gives the format
        unless ``format`` names it.
    format
        ``"csv"``, ``"jsonl"`` or ``"parquet"``.
    classes
        The classes, in the order of the ``p_<class>`` columns; by default those of the
        first prediction (:attr:`~covidcxr.Pipeline.classes_` is the usual choice).
    overwrite
        Replace an existing file.
    note
        A notice every row carries in a ``model_note`` column (for a model trained on
        synthetic phantoms: :func:`~covidcxr.pipeline.model_note`); no column when
        ``None``.
    severity
        Add the severity columns: ``severity_right``, ``severity_left`` and
        ``severity_total`` (infected shares), ``severity_right_grade`` and
        ``severity_left_grade`` (0 to 4) and ``severity_score`` (0 to 8), empty where
        a prediction has no :attr:`~covidcxr.Prediction.severity` (see
        :attr:`covidcxr.Pipeline.measures_severity`).

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false (checked before reading anything).
    ConfigurationError
        For an unknown format, Parquet without pyarrow, or a prediction whose classes
        differ from the table's.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from covidcxr import Prediction
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "predictions.csv"
    >>> write_predictions([Prediction("a.png", "normal", {"normal": 0.75, "covid-19": 0.25})],
    ...                   path)
    1
    >>> print(path.read_text().splitlines()[0])
    id,label,status,probability,p_normal,p_covid-19,ood_score,reason,n_lesions,detections
    """
    fmt = output_format(path, format)
    _check_target(path, fmt, overwrite=overwrite)
    rows = iter(predictions)
    first = next(rows, None)
    if classes is None:
        # The classes of the first prediction that has probabilities (a radiograph the
        # input gate refused has none).
        leading = [] if first is None else [first]
        while leading and not leading[-1].probabilities:
            following = next(rows, None)
            if following is None:
                break
            leading.append(following)
        classes = next((tuple(p.probabilities) for p in leading if p.probabilities), ())
        rows = itertools.chain(leading[1:], rows)
    names = tuple(classes)
    columns = prediction_columns(names, severity=severity, note=note is not None)
    noted = {"model_note": note} if note is not None else {}
    with _open_table(path, fmt, columns, overwrite=overwrite) as table:
        if first is None:
            return 0
        for prediction in _chain(first, rows):
            given = tuple(prediction.probabilities)
            if given and given != names:  # a rejected radiograph has none
                raise ConfigurationError(
                    f"{prediction.id}: its probabilities are for the classes "
                    f"{tuple(prediction.probabilities)}, the table's are {names}"
                )
            row = prediction_row(prediction, names, severity=severity, note=note)
            table.write(row, {**prediction.to_dict(), **noted})
    return table.rows


ColumnKind = _Kind


def prediction_columns(
    classes: Sequence[str], *, severity: bool = False, note: bool = False
) -> list[tuple[str, ColumnKind]]:
    """The columns of a predictions table, in order, with their kinds.

    Kinds are ``"string"``, ``"int"``, ``"float"`` and ``"detections"`` (a list of boxes
    with their labels and scores).

    Examples
    --------
    >>> [name for name, _ in prediction_columns(["normal", "covid-19"])][:6]
    ['id', 'label', 'status', 'probability', 'p_normal', 'p_covid-19']
    """
    columns: list[tuple[str, ColumnKind]] = [
        ("id", "string"),
        ("label", "string"),
        ("status", "string"),
        ("probability", "float"),
        *((f"p_{name}", "float") for name in classes),
        ("ood_score", "float"),
        ("reason", "string"),
        ("n_lesions", "int"),
        ("detections", "detections"),
    ]
    if severity:
        columns += [(f"severity_{part}", "float") for part in ("right", "left", "total")]
        columns += [(f"severity_{part}", "int") for part in ("right_grade", "left_grade", "score")]
    if note:
        columns.append(("model_note", "string"))
    return columns


def prediction_row(
    prediction: Prediction,
    classes: Sequence[str],
    *,
    severity: bool = False,
    note: str | None = None,
) -> dict[str, Any]:
    """One prediction as the row :func:`write_predictions` writes (detections as dicts).

    Distributed engines build their tables with it, so every engine writes the same columns.

    Examples
    --------
    >>> from covidcxr import Prediction
    >>> row = prediction_row(Prediction("a.png", "normal", {"normal": 0.75, "covid-19": 0.25}),
    ...                      ["normal", "covid-19"])
    >>> row["label"], row["p_covid-19"], row["n_lesions"]
    ('normal', 0.25, 0)
    """
    # The detector never looked at a radiograph the gate rejected: no count, not zero.
    looked = prediction.status != REJECTED
    detections = _detection_dicts(prediction.detections) if looked else None
    return {
        "id": prediction.id,
        "label": prediction.label,
        "status": prediction.status,
        "probability": prediction.confidence,
        **{f"p_{name}": prediction.probabilities.get(name) for name in classes},
        "ood_score": prediction.ood_score,
        "reason": prediction.reason,
        "n_lesions": len(detections) if detections is not None else None,
        "detections": detections,
        **(_severity_columns(prediction) if severity else {}),
        **({"model_note": note} if note is not None else {}),
    }


_SEVERITY_COLUMNS: Final = (
    "severity_right",
    "severity_left",
    "severity_total",
    "severity_right_grade",
    "severity_left_grade",
    "severity_score",
)


def _severity_columns(prediction: Prediction) -> dict[str, float | int | None]:
    measured = prediction.severity
    if measured is None:
        return dict.fromkeys(_SEVERITY_COLUMNS)
    return {
        "severity_right": measured.right,
        "severity_left": measured.left,
        "severity_total": measured.total,
        "severity_right_grade": measured.right_grade,
        "severity_left_grade": measured.left_grade,
        "severity_score": measured.score,
    }


def _chain(first: Prediction, rest: Iterator[Prediction]) -> Iterator[Prediction]:
    yield first
    yield from rest


class DetectionsTable:
    """An open table of lesion detections: :meth:`add` writes one radiograph's row.

    Made by :func:`detections_table`. A row has ``id``, ``path`` (the file the radiograph
    was read from, when known), ``width``, ``height`` (the boxes' frame), ``n_lesions``
    and ``detections``; opened with ``verdicts=True``, also ``status`` and ``reason`` (a
    whole model's input gate's verdict, as in a prediction), and a rejected radiograph's
    ``n_lesions`` and ``detections`` are empty: the detector never saw it.
    """

    def __init__(self, table: _Table, *, verdicts: bool = False) -> None:
        self._table = table
        self._verdicts = verdicts

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self._table.rows

    def add(
        self,
        xray: XRay,
        detections: Sequence[Detection],
        *,
        status: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Write the row of ``xray`` (the image the boxes are drawn on) and its detections.

        ``status`` and ``reason`` are written to a table opened with ``verdicts=True``.
        """
        height, width = xray.shape
        path = xray.meta.get("path")
        found = None if status == REJECTED else _detection_dicts(detections)
        document: dict[str, Any] = {
            "id": xray.id,
            "path": None if path is None else str(path),
            "width": width,
            "height": height,
            "detections": found,
        }
        if self._verdicts:
            document |= {"status": status, "reason": reason}
        n_lesions = None if found is None else len(found)
        self._table.write({**document, "n_lesions": n_lesions}, document)


_VERDICT_COLUMNS: Final[tuple[tuple[str, _Kind], ...]] = (
    ("status", "string"),
    ("reason", "string"),
)
_DETECTION_COLUMNS: Final[tuple[tuple[str, _Kind], ...]] = (
    ("id", "string"),
    ("path", "string"),
    ("width", "int"),
    ("height", "int"),
    ("n_lesions", "int"),
    ("detections", "detections"),
)


@contextlib.contextmanager
def detections_table(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    overwrite: bool = False,
    verdicts: bool = False,
) -> Iterator[DetectionsTable]:
    """Open a CSV, JSON Lines or Parquet table of detections, written row by row.

    The file appears, complete, when the ``with`` block ends without an error; an error
    leaves no file behind (and an existing one untouched).

    Parameters
    ----------
    path, format, overwrite
        As for :func:`write_predictions`.
    verdicts
        Also write ``status`` and ``reason`` columns: the input gate's verdict on each
        radiograph, when a whole model boxes them (``covidcxr detect --model covid-qu-ex``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from covidcxr import Box, Detection, XRay
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "detections.jsonl"
    >>> with detections_table(path) as table:
    ...     table.add(XRay(np.zeros((40, 48), np.uint8), "a.png"),
    ...               [Detection(Box(4, 6, 20, 12), "opacity", 0.8)])
    >>> print(path.read_text().strip()[:60])
    {"id": "a.png", "path": null, "width": 48, "height": 40, "de
    """
    fmt = output_format(path, format)
    columns = _DETECTION_COLUMNS + (_VERDICT_COLUMNS if verdicts else ())
    with _open_table(path, fmt, columns, overwrite=overwrite) as table:
        yield DetectionsTable(table, verdicts=verdicts)


def write_skipped(
    skipped: Iterable[Skipped], path: str | os.PathLike[str], *, overwrite: bool = False
) -> int:
    """Write the items a source skipped, with the reasons, as a CSV of ``path,reason``.

    Returns
    -------
    int
        The number of rows written.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "skipped.csv"
    >>> write_skipped([Skipped("COVID/broken.png", "truncated PNG")], path)
    1
    >>> print(path.read_text().strip())
    path,reason
    COVID/broken.png,truncated PNG
    """
    columns: list[tuple[str, _Kind]] = [("path", "string"), ("reason", "string")]
    with _open_table(path, "csv", columns, overwrite=overwrite) as table:
        for item in skipped:
            row = {"path": item.path, "reason": item.reason}
            table.write(row, row)
    return table.rows


def skipped_path_for(output: str | os.PathLike[str]) -> Path:
    """The file beside ``output`` that lists what a run skipped: ``<stem>.skipped.csv``.

    Examples
    --------
    >>> skipped_path_for("runs/predictions.parquet").as_posix()
    'runs/predictions.skipped.csv'
    """
    target = Path(output)
    return target.with_name(f"{target.stem}.skipped.csv")
