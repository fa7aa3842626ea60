"""The batch item-ingestion job behind ``hybridrec ingest``.

Streams JSONL or CSV (never the whole file in memory), validates each row with the engine's own
parser, encodes and upserts in batches, writes every rejected row with its line number and reason
to a rejects file, and keeps a checkpoint after each committed batch so a killed run resumes where
it stopped. Upserts are idempotent, so re-running a finished file leaves one copy of each item.

Every line of the file ends up either in the catalogue or in the rejects file, never both: a row
that is not valid UTF-8, not valid JSON or CSV, not a valid item, or that repeats an id an earlier
row of the same file already gave (the first one is kept) is rejected, and the job goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from retrieval.state.catalogue import Catalogue
from retrieval.storage.files import write_atomically

CSV_COLUMNS = ("id", "title", "description", "brand", "categories", "price")
CSV_ATTRIBUTE_PREFIX = "attributes."
CSV_CATEGORY_SEPARATOR = "|"


class FatalIngestError(RuntimeError):
    """The job cannot go on (unreadable file, unknown CSV columns, ...). Rows are never fatal."""


@dataclass
class IngestSummary:
    """Counts for the whole file (earlier runs of a resumed job included); ``seconds`` and
    ``items_per_second`` are this run's alone."""

    file: str
    rows: int = 0
    upserted: int = 0
    rejected: int = 0
    duplicates: int = 0  # rows rejected because an earlier row of the file had their id
    resumed_from_line: int = 0
    upserted_before: int = 0  # by the earlier runs this one resumed
    seconds: float = 0.0
    rejects_file: str | None = None

    @property
    def upserted_this_run(self) -> int:
        return self.upserted - self.upserted_before

    @property
    def items_per_second(self) -> float:
        return self.upserted_this_run / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        run = f"{self.seconds:.1f} s, {self.items_per_second:.0f} items/s"
        if self.resumed_from_line:
            text = f"ingested {self.upserted} items from {self.file} ({self.upserted_this_run} in this run: {run})"
        else:
            text = f"ingested {self.upserted} items from {self.file} in {self.seconds:.1f} s ({self.items_per_second:.0f} items/s)"
        text += f"; rejected {self.rejected}"
        notes = []
        if self.duplicates:
            notes.append(f"{self.duplicates} for repeating an earlier row's id: the first row of each id was kept")
        if self.rejected and self.rejects_file:
            notes.append(f"line numbers and reasons in {self.rejects_file}")
        if notes:
            text += f" ({'; '.join(notes)})"
        if self.resumed_from_line:
            text += f"; resumed after line {self.resumed_from_line}"
        return text


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("jsonl", "csv"):
            raise FatalIngestError(f"--format must be jsonl or csv, got {fmt!r}")
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise FatalIngestError(f"cannot tell the format of {path.name}; pass --format jsonl or --format csv")


def _undecodable(text: str) -> str | None:
    """Why ``text`` (read with ``surrogateescape``) is not UTF-8, or None when it is."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        if 0xDC80 <= code <= 0xDCFF:  # a byte that did not decode, kept by surrogateescape
            return (f"not valid UTF-8: byte 0x{code - 0xDC00:02x} at character {err.start + 1}; "
                    "save the file as UTF-8")
        return f"not valid Unicode: a lone surrogate \\u{code:04x} at character {err.start + 1}"


def _unencodable_value(row: Any) -> str | None:
    """Why a parsed row holds text that cannot be stored (a lone surrogate from a JSON escape such
    as ``"\\udc80"``, which the encoder and the store cannot take), or None."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError as err:
        return f"not valid Unicode: a text value holds the lone surrogate {err.object[err.start]!a}, which cannot be stored"


def _jsonl_rows(fh) -> Iterator[tuple[int, Any, str | None]]:
    for line_no, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        bad = _undecodable(line)
        if bad:
            yield line_no, None, f"line is {bad}"
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield line_no, None, f"line is not valid JSON: {err.msg} at column {err.colno}"
            continue
        bad = _unencodable_value(row)
        yield (line_no, None, f"row is {bad}") if bad else (line_no, row, None)


def _csv_value(column: str, value: str) -> tuple[str, Any]:
    if column == "categories":
        return column, [c.strip() for c in value.split(CSV_CATEGORY_SEPARATOR) if c.strip()]
    if column == "price":
        if not value.strip():
            return column, None
        try:
            return column, float(value)
        except ValueError:
            return column, value  # the item parser rejects it, naming the field
    return column, value


def _csv_rows(fh) -> Iterator[tuple[int, Any, str | None]]:
    reader = csv.DictReader(fh)
    header = reader.fieldnames or []
    if any(_undecodable(column) for column in header):
        raise FatalIngestError(f"the CSV header (line 1) is {_undecodable(','.join(header))}")
    unknown = [c for c in header if c not in CSV_COLUMNS and not c.startswith(CSV_ATTRIBUTE_PREFIX)]
    if unknown or "id" not in header or "title" not in header:
        raise FatalIngestError(
            f"CSV header {header} is not usable: needs id and title; allowed columns are "
            f"{', '.join(CSV_COLUMNS)} and {CSV_ATTRIBUTE_PREFIX}<name>" + (f"; unknown: {unknown}" if unknown else "")
        )
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield reader.line_num, None, f"malformed CSV: {err}"
            continue
        row: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        if None in record:  # more fields than header columns
            yield reader.line_num, None, f"row has {len(header) + len(record[None])} fields, header has {len(header)}"
            continue
        bad = next((_undecodable(v) for v in record.values() if v and _undecodable(v)), None)
        if bad:
            yield reader.line_num, None, f"row is {bad}"
            continue
        for column, value in record.items():
            if value is None:
                continue
            if column.startswith(CSV_ATTRIBUTE_PREFIX):
                if value != "":
                    attributes[column[len(CSV_ATTRIBUTE_PREFIX):]] = value
            elif value != "" or column in ("id", "title"):
                key, parsed = _csv_value(column, value)
                if parsed is not None:
                    row[key] = parsed
        if attributes:
            row["attributes"] = attributes
        yield reader.line_num, row, None


def read_rows(path: Path, fmt: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, raw row or None, parse error or None) for each record of the file."""
    try:
        # A byte that is not UTF-8 spoils its row only: surrogateescape keeps it for the row's
        # check instead of raising mid-file. utf-8-sig drops the byte-order mark some editors write.
        fh = open(path, newline="" if fmt == "csv" else None, encoding="utf-8-sig", errors="surrogateescape")
    except OSError as err:
        raise FatalIngestError(f"cannot read {path}: {err.strerror}") from None
    with fh:
        yield from (_csv_rows(fh) if fmt == "csv" else _jsonl_rows(fh))


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


class Checkpoint:
    """Where a run on this exact file (path, size, mtime) got to; removed when the run finishes."""

    def __init__(self, directory: Path, source: Path):
        stat = source.stat()
        key = hashlib.sha1(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        self.path = directory / f"{key}.json"

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, state: dict[str, Any]) -> None:
        # A kill leaves the old or the new checkpoint.
        write_atomically(self.path, lambda fh: fh.write(json.dumps(state).encode()), durable=False)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def ingest_file(
    catalogue: Catalogue,
    path: str | Path,
    fmt: str | None = None,
    rejects: str | Path | None = None,
    batch_size: int = 256,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[int, IngestSummary], None] | None = None,
) -> IngestSummary:
    """Load a catalogue file; see the module docstring. Raises FatalIngestError only when the
    job cannot go on; bad rows go to the rejects file. ``on_batch(line, summary)`` is called after
    each committed batch with the file's last line it covered (the service's upload progress)."""
    path = Path(path)
    if not path.is_file():
        raise FatalIngestError(f"{path} does not exist or is not a file")
    fmt = detect_format(path, fmt)
    rejects_path = Path(rejects) if rejects else path.with_name(path.name + ".rejects.jsonl")
    checkpoint = Checkpoint(Path(checkpoint_dir or path.parent / ".hybridrec-ingest"), path)
    state = checkpoint.load() or {"line": 0, "rows": 0, "upserted": 0, "rejected": 0}
    summary = IngestSummary(str(path), rows=state["rows"], upserted=state["upserted"], rejected=state["rejected"],
                            duplicates=state.get("duplicates", 0), resumed_from_line=state["line"],
                            upserted_before=state["upserted"], rejects_file=str(rejects_path))
    started = time.perf_counter()
    total = count_lines(path)
    bar = tqdm(total=total, initial=state["line"], unit="line", desc=f"ingest {path.name}",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    rejects_fh = open(rejects_path, "a" if state["line"] else "w", encoding="utf-8")
    if "rejects_bytes" in state:
        # A run killed after writing a batch's rejects but before its checkpoint wrote them once
        # already; that batch is redone, so its rejects go.
        rejects_fh.truncate(state["rejects_bytes"])
        rejects_fh.seek(state["rejects_bytes"])
    # (line, raw row, parse error): parse errors ride with their batch, so the rejects file and
    # the checkpoint always move together and a resumed run writes no reject twice.
    batch: list[tuple[int, Any, str | None]] = []
    # Each id's first line in this file: a later row with the same id is rejected, not silently
    # written over the first. Rebuilt from the committed lines when a run resumes.
    first_line: dict[str, int] = {}

    def flush_batch(last_line: int) -> None:
        nonlocal batch
        items, lines = [], []
        for line_no, row, error in batch:
            if error is not None:
                lines.append({"line": line_no, "id": None, "field": None, "error": error})
                continue
            valid, rejected = catalogue.validate([row])
            if rejected:
                r = rejected[0]
                lines.append({"line": line_no, "id": r.id, "field": r.field, "error": r.error})
                continue
            item = valid[0]
            first = first_line.setdefault(item.id, line_no)
            if first != line_no:
                lines.append({"line": line_no, "id": item.id, "field": "id",
                              "error": f"duplicate id: line {first} has the same id and was kept; merge the two "
                                       "rows or give this one its own id"})
                summary.duplicates += 1
                continue
            items.append(item)
        if items:
            catalogue.write(catalogue.encode(items, batch_size=64))
        for entry in lines:
            rejects_fh.write(json.dumps(entry) + "\n")
        rejects_fh.flush()
        summary.upserted += len(items)
        summary.rejected += len(lines)
        summary.rows += len(batch)
        checkpoint.save({"line": last_line, "rows": summary.rows, "upserted": summary.upserted,
                         "rejected": summary.rejected, "duplicates": summary.duplicates,
                         "rejects_bytes": rejects_fh.tell()})
        if on_batch is not None:
            on_batch(last_line, summary)
        bar.update(max(0, last_line - bar.n))
        bar.set_postfix(items_per_s=f"{summary.upserted_this_run / max(time.perf_counter() - started, 1e-9):.0f}",
                        rejected=summary.rejected, refresh=False)
        batch = []

    try:
        last_line = state["line"]
        for line_no, row, error in read_rows(path, fmt):
            if line_no <= state["line"]:  # committed by an earlier run: only its ids matter now
                if error is None:
                    valid, _ = catalogue.validate([row])
                    if valid:
                        first_line.setdefault(valid[0].id, line_no)
                continue
            last_line = line_no
            batch.append((line_no, row, error))
            if len(batch) >= batch_size:
                flush_batch(line_no)
        if batch:
            flush_batch(last_line)
        bar.update(max(0, total - bar.n))
    finally:
        bar.close()
        rejects_fh.close()
    catalogue.optimize()  # build HNSW once after the bulk load
    checkpoint.clear()
    summary.seconds = time.perf_counter() - started
    if not summary.rejected:
        rejects_path.unlink(missing_ok=True)
        summary.rejects_file = None
    return summary
