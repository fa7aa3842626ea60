"""The batch item-ingestion job behind ``hybridrec ingest``.

Streams JSONL or CSV (never the whole file in memory), validates each row with the engine's own
parser, encodes and upserts in batches, writes every rejected row with its line number and reason
to a rejects file, and keeps a checkpoint after each committed batch so a killed run resumes where
it stopped. Upserts are idempotent, so re-running a finished file leaves one copy of each item.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from retrieval.state.catalogue import Catalogue

CSV_COLUMNS = ("id", "title", "description", "brand", "categories", "price")
CSV_ATTRIBUTE_PREFIX = "attributes."
CSV_CATEGORY_SEPARATOR = "|"


class FatalIngestError(RuntimeError):
    """The job cannot go on (unreadable file, unknown CSV columns, ...). Rows are never fatal."""


@dataclass
class IngestSummary:
    file: str
    rows: int = 0
    upserted: int = 0
    rejected: int = 0
    resumed_from_line: int = 0
    seconds: float = 0.0
    rejects_file: str | None = None

    @property
    def items_per_second(self) -> float:
        return self.upserted / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        text = (f"ingested {self.upserted} items from {self.file} in {self.seconds:.1f} s "
                f"({self.items_per_second:.0f} items/s); rejected {self.rejected}")
        if self.rejected and self.rejects_file:
            text += f" (line numbers and reasons in {self.rejects_file})"
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


def _jsonl_rows(fh) -> Iterator[tuple[int, Any, str | None]]:
    for line_no, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line), None
        except json.JSONDecodeError as err:
            yield line_no, None, f"line is not valid JSON: {err.msg} at column {err.colno}"


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
        fh = open(path, newline="" if fmt == "csv" else None, encoding="utf-8")
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # atomic: a kill leaves the old or the new checkpoint

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
) -> IngestSummary:
    """Load a catalogue file; see the module docstring. Raises FatalIngestError only when the
    job cannot go on; bad rows go to the rejects file."""
    path = Path(path)
    if not path.is_file():
        raise FatalIngestError(f"{path} does not exist or is not a file")
    fmt = detect_format(path, fmt)
    rejects_path = Path(rejects) if rejects else path.with_name(path.name + ".rejects.jsonl")
    checkpoint = Checkpoint(Path(checkpoint_dir or path.parent / ".hybridrec-ingest"), path)
    state = checkpoint.load() or {"line": 0, "rows": 0, "upserted": 0, "rejected": 0}
    summary = IngestSummary(str(path), rows=state["rows"], upserted=state["upserted"], rejected=state["rejected"],
                            resumed_from_line=state["line"], rejects_file=str(rejects_path))
    started = time.perf_counter()
    total = count_lines(path)
    bar = tqdm(total=total, initial=state["line"], unit="line", desc=f"ingest {path.name}",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    rejects_fh = open(rejects_path, "a" if state["line"] else "w", encoding="utf-8")
    # (line, raw row, parse error): parse errors ride with their batch, so the rejects file and
    # the checkpoint always move together and a resumed run writes no reject twice.
    batch: list[tuple[int, Any, str | None]] = []
    upserted_since = 0

    def flush_batch(last_line: int) -> None:
        nonlocal batch, upserted_since
        good = [(line_no, row) for line_no, row, error in batch if error is None]
        items, rejected = catalogue.validate([row for _, row in good])
        if items:
            catalogue.write(catalogue.encode(items, batch_size=64))
        lines = [{"line": line_no, "id": None, "field": None, "error": error}
                 for line_no, _, error in batch if error is not None]
        lines += [{"line": good[r.index][0], "id": r.id, "field": r.field, "error": r.error} for r in rejected]
        for entry in sorted(lines, key=lambda e: e["line"]):
            rejects_fh.write(json.dumps(entry) + "\n")
        rejects_fh.flush()
        summary.upserted += len(items)
        summary.rejected += len(lines)
        summary.rows += len(batch)
        upserted_since += len(items)
        checkpoint.save({"line": last_line, "rows": summary.rows, "upserted": summary.upserted,
                         "rejected": summary.rejected})
        bar.update(max(0, last_line - bar.n))
        bar.set_postfix(items_per_s=f"{upserted_since / max(time.perf_counter() - started, 1e-9):.0f}",
                        rejected=summary.rejected, refresh=False)
        batch = []

    try:
        last_line = state["line"]
        for line_no, row, error in read_rows(path, fmt):
            if line_no <= state["line"]:
                continue  # committed by an earlier run
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
