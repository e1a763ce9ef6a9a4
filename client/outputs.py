"""The predictions file `score` writes: CSV or JSON Lines, incremental, resumable.

Rows are written as they are scored, flushed to the operating system whenever a quarter of a
second has passed since the last flush, and on close (Ctrl-C included), so an interrupted run
keeps its finished rows; the worst a hard kill can leave is an unterminated last line, which
`--resume` drops (and the few unflushed rows are scored again).
Rewrites (resume, final ordering) go to a temporary file in the same folder that then replaces
the original in one rename, so the file is never seen half-rewritten.

File names are written in the escaped form of `client.names.escape_name` (valid UTF-8, one line,
lossless); `read_rows` returns that text, `PredictionWriter.done` the real names.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
from pathlib import Path

import orjson

from client.names import escape_name, name_bytes, needs_escape, unescape_name
from client.scoring import ScoredImage

COLUMNS = (
    "path", "class_id", "class", "confidence", "top_k", "model_version", "error", "warning",
)  # fmt: skip
# Files written before the `warning` column existed are still read (and resumed).
_OLD_COLUMNS = COLUMNS[:-1]
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FLUSH_SECONDS = 0.25  # a row waits at most this long in the buffer while others follow


def output_format(path: Path) -> str:
    """ "csv" or "jsonl" from the file's extension; ValueError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot tell the format of {path}: name it *.csv or *.jsonl")
    return FORMATS[suffix]


def _number(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (0.98123455, not 0.981234550476)."""
    return _numbers([value])[0]


def _numbers(values: list[float]) -> list[float]:
    """`_number` of many values at once (see `_number_texts`)."""
    return [float(text) for text in _number_texts(values)]


def _number_texts(values: list[float]) -> list[str]:
    """The shortest decimal of each value as a float32, in Python's notation (repr of the float
    it reads back as: "0.98123455", "1.2e-05", "1.0").

    orjson writes a whole float32 array's shortest decimals in one call, a tenth of what
    numpy's astype(str) costs; it differs from Python's notation only where Python writes an
    exponent (below 1e-4, from 1e16 on), and those few go through repr. Not-a-number and the
    infinities, which JSON has no words for, take numpy's way.
    """
    import numpy as np

    if not values:
        return []
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        return [repr(float(text)) for text in array.astype(str).tolist()]
    texts = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    return [
        text
        if len(text) < 17 and "e" not in text and not text.startswith(("0.0000", "-0.0000"))
        else repr(float(text))
        for text in texts
    ]


def _text(value: str | None) -> str | None:
    """`value`, with any lone surrogate (an undecodable byte that reached a message) escaped
    as `\\xHH`: JSON and UTF-8 files cannot hold them."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value


def to_row(result: ScoredImage) -> dict:
    """The JSON-able row of one result; `top_k` is a list of {"class_id", "confidence"}.

    `path` is the file's name escaped by `client.names.escape_name`.
    """
    return to_rows([result])[0]


def to_rows(results: list[ScoredImage]) -> list[dict]:
    """`to_row` of each result, their probabilities rounded in one call."""
    return [
        {
            "path": escape_name(result.path),
            "class_id": result.class_id,
            "class": _text(result.class_name),
            "confidence": confidence,
            "top_k": [
                {"class_id": class_id, "confidence": probability}
                for (class_id, _, _), probability in zip(result.top_k, ranked, strict=True)
            ],
            "model_version": result.model_version,
            "error": _text(result.error),
            "warning": _text(result.warning),
        }
        for result, confidence, ranked in _rounded(results)
    ]


def _rounded(results: list[ScoredImage], render=_numbers):
    """(result, its confidence, its top-k probabilities) with every number rounded by `_number`
    (or written by `_number_texts`, with `render`), all of them in one call."""
    probabilities: list[float] = []
    for result in results:
        if result.confidence is not None:
            probabilities.append(result.confidence)
        probabilities.extend(probability for _, _, probability in result.top_k)
    numbers = render(probabilities)
    position = 0
    for result in results:
        confidence = None
        if result.confidence is not None:
            confidence = numbers[position]
            position += 1
        ranked = numbers[position : position + len(result.top_k)]
        position += len(result.top_k)
        yield result, confidence, ranked


def _csv_table(results: list[ScoredImage]) -> list[list]:
    """`csv_values(to_row(result))` of each result, without the dicts in between; the numbers
    as their text (the text the CSV writer would give their floats)."""
    escape = escape_name if needs_escape("".join(result.path for result in results)) else None
    return [
        [
            escape(result.path) if escape else result.path,
            "" if result.class_id is None else result.class_id,
            _text(result.class_name) or "",
            "" if confidence is None else confidence,
            ";".join(
                [
                    f"{class_id}:{probability}"
                    for (class_id, _, _), probability in zip(result.top_k, ranked, strict=True)
                ]
            ),
            result.model_version or "",
            _text(result.error) or "",
            _text(result.warning) or "",
        ]
        for result, confidence, ranked in _rounded(results, _number_texts)
    ]


def format_top_k(top_k: list[dict]) -> str:
    """CSV form of top-k: "7:0.98;2:0.011;3:0.0052" (class id:probability, best first)."""
    return ";".join(f"{entry['class_id']}:{entry['confidence']}" for entry in top_k)


def parse_top_k(text: str) -> list[dict]:
    entries = []
    for item in filter(None, text.split(";")):
        class_id, _, confidence = item.partition(":")
        entries.append({"class_id": int(class_id), "confidence": float(confidence)})
    return entries


def csv_values(row: dict) -> list:
    """The CSV fields of `row`, in COLUMNS order (None as empty, top-k in its CSV form)."""
    values = [row.get(column) for column in COLUMNS]
    values[4] = format_top_k(values[4])
    return ["" if value is None else value for value in values]


def _needs_quotes(values: list) -> bool:
    """True when a field holds a carriage return: with lineterminator "\\n", Python's csv writer
    quotes fields that hold "\\n" but not "\\r", and an unquoted "\\r" ends the row for every
    CSV reader. (Escaped names never hold one; a class name from the model might.)"""
    return "\r" in "".join(value for value in values if type(value) is str)


def _write_csv_row(writer, quoting_writer, values: list) -> None:
    (quoting_writer if _needs_quotes(values) else writer).writerow(values)


def encode(row: dict, fmt: str) -> str:
    """One complete line (with its newline) for `row` in format `fmt`."""
    if fmt == "jsonl":
        return orjson.dumps(row).decode() + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    quoting = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)
    _write_csv_row(writer, quoting, csv_values(row))
    return buffer.getvalue()


def header(fmt: str) -> str:
    return ",".join(COLUMNS) + "\n" if fmt == "csv" else ""


def read_rows(path: Path) -> list[dict]:
    """The complete rows of a predictions file (an unterminated last line is ignored).

    Raises ValueError when the file is not a predictions file of the expected format.
    """
    fmt = output_format(path)
    text = Path(path).read_bytes().decode("utf-8", "surrogateescape")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if fmt == "jsonl":
        rows = []
        # Split on "\n" only: str.splitlines() also breaks at U+2028, U+0085 and other
        # characters that JSON strings carry unescaped.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ValueError(f"{path}:{number} is not JSON; not a predictions file") from None
            if not isinstance(row, dict) or "path" not in row:
                raise ValueError(f"{path}:{number} has no 'path'; not a predictions file")
            rows.append(row)
        return rows
    if not text:
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = tuple(next(reader, ()))
    if columns not in (COLUMNS, _OLD_COLUMNS):
        raise ValueError(f"{path} does not start with the header {','.join(COLUMNS)}")
    rows = []
    for fields in reader:
        if not fields:
            continue
        if len(fields) != len(columns):
            raise ValueError(
                f"{path}:{reader.line_num} has {len(fields)} fields, not {len(columns)}: not a "
                "predictions file, or one torn by an unquoted line break"
            )
        row = dict(zip(columns, fields, strict=True))
        rows.append(
            {
                "path": row["path"],
                "class_id": int(row["class_id"]) if row["class_id"] else None,
                "class": row["class"] if row["class_id"] else None,
                "confidence": float(row["confidence"]) if row["confidence"] else None,
                "top_k": parse_top_k(row["top_k"]),
                "model_version": int(row["model_version"]) if row["model_version"] else None,
                "error": row["error"] or None,
                "warning": row.get("warning") or None,
            }
        )
    return rows


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace(path: Path, content: str) -> None:
    """Write `content` to a temporary file beside `path`, fsync it, rename it over `path`.

    The file gets the mode a plain open() would give it (0666 less the umask, usually 0644, as
    the reports have), not mkstemp's 0600: other users and pods read predictions too.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())
        with os.fdopen(
            descriptor, "w", encoding="utf-8", errors="surrogateescape", newline=""
        ) as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class PredictionWriter:
    """Appends rows to a predictions file.

    resume: keep the successful rows of an existing file (`done` holds their files' real names,
        as `ScoredImage.path` has them) and drop its failed rows so that those files are scored
        again. Without resume, an existing file is an
        error unless `overwrite`.
    Use as a context manager; `close(sort=True)` rewrites the file ordered by path.
    """

    def __init__(self, path: Path, *, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.done: set[str] = set()
        self.kept = 0
        self.dropped_failures = 0
        if not self.path.parent.is_dir():
            raise ValueError(f"folder {self.path.parent} does not exist")
        if self.path.exists() and not (resume or overwrite):
            raise FileExistsError(
                f"{self.path} exists: pass --resume to continue it or --overwrite to replace it"
            )
        rows = read_rows(self.path) if resume and self.path.exists() else []
        kept = [row for row in rows if not row.get("error")]
        self.dropped_failures = len(rows) - len(kept)
        self.kept = len(kept)
        for row in kept:  # canonical text: a file from before escaping may hold a lone "\\"
            row["path"] = escape_name(unescape_name(row["path"]))
            row.setdefault("warning", None)  # a file from before the warning column
        self.done = {unescape_name(row["path"]) for row in kept}
        _replace(self.path, header(self.format) + "".join(encode(row, self.format) for row in kept))
        self._flushed_at = time.monotonic()
        self._file = open(  # noqa: SIM115 - closed in close()
            self.path, "a", encoding="utf-8", errors="surrogateescape", newline=""
        )
        # One csv writer straight onto the file: a writer and a buffer per row cost more than
        # the rest of the row's work.
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv_quoting = csv.writer(self._file, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self._pending: list[ScoredImage] = []

    def write(self, result: ScoredImage) -> None:
        # Rows wait here until the next flush and are then rendered together (their numbers in
        # one numpy call): per row, that rendering cost more than scoring it. Flushing every
        # row would cost more still; a few tenths of a second of rows lost to a hard kill are
        # simply scored again by --resume.
        self._pending.append(result)
        now = time.monotonic()
        if now - self._flushed_at >= FLUSH_SECONDS or len(self._pending) >= 4096:
            self._write_pending()
            self._file.flush()
            self._flushed_at = now

    def _write_pending(self) -> None:
        results, self._pending = self._pending, []
        if self.format == "jsonl":
            self._file.write("".join(orjson.dumps(row).decode() + "\n" for row in to_rows(results)))
            return
        table = _csv_table(results)
        # The text fields a carriage return could be in (the class, error and warning
        # columns), looked at once for the whole batch: usually none, and one writerows call.
        if "\r" in "".join(f"{row[2]}{row[6]}{row[7]}" for row in table):
            for values in table:
                _write_csv_row(self._csv, self._csv_quoting, values)
        else:
            self._csv.writerows(table)

    def close(self, *, sort: bool = False) -> None:
        if self._file.closed:
            return
        self._write_pending()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if sort:
            # The order of the listing (client.preprocess.list_images): by the names' bytes.
            rows = sorted(read_rows(self.path), key=lambda row: name_bytes(row["path"]))
            _replace(self.path, header(self.format) + "".join(encode(r, self.format) for r in rows))

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# What evaluate writes into its --report-dir (client.report.REPORT_FILES, without importing it).
_REPORT_FILES = frozenset(
    {"report.json", "report.md", "report.html", "confusion_matrix.png", "misclassified.png"}
)


# Endings of every path own_outputs can keep (lower case: a pre-filter, wider than the test).
_MAYBE_OURS = tuple(FORMATS) + tuple(
    separator + name for name in _REPORT_FILES for separator in {os.sep, os.altsep or os.sep}
)


def is_report_folder(folder: Path) -> bool:
    """True for a folder that evaluate wrote a report into (it holds report.json and
    report.html)."""
    return (Path(folder) / "report.json").is_file() and (Path(folder) / "report.html").is_file()


def is_predictions_file(path: Path) -> bool:
    """True for a file that score wrote: *.csv starting with the predictions header, or *.jsonl
    whose first row is a predictions row."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        return False
    try:
        with open(path, "rb") as handle:
            start = handle.read(256)
    except OSError:
        return False
    if FORMATS[suffix] == "csv":
        return start.startswith(",".join(_OLD_COLUMNS).encode())
    return start.startswith(b'{"path":') and b'"class_id":' in start


def own_outputs(files: list[Path] | list[str]) -> set[Path] | set[str]:
    """The files among `files` that score or evaluate wrote: predictions files and the files of
    evaluate's report folders. Scoring them would add rows about our own outputs."""
    found: set[Path] = set()
    report_folders: dict[str, bool] = {}
    for path in files:
        # One endswith per file first: nearly every file of a folder of images fails it, and
        # splitting each path cost 3 µs a file (30 ms of a 10,000-file `score`'s start).
        text = os.fspath(path)
        if not text.lower().endswith(_MAYBE_OURS) and text not in _REPORT_FILES:
            continue
        # String arithmetic on the name: pathlib per file costs more than the rest of the test.
        parent, name = os.path.split(text)
        if name in _REPORT_FILES:
            if parent not in report_folders:
                report_folders[parent] = is_report_folder(Path(parent))
            if report_folders[parent]:
                found.add(path)
                continue
        if os.path.splitext(name)[1].lower() in FORMATS and is_predictions_file(path):
            found.add(path)
    return found
