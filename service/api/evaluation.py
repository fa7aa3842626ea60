"""``/v1/admin/evaluation``: the latest offline evaluation report, as ``hybridrec evaluate --out``
wrote it (``report.md``, ``results.json``, PNG plots). Only its files are read: serving never
loads the evaluation's code."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.exceptions import NotFoundException
from litestar.response import File

from service.access import ADMIN, SECURITY
from service.settings import Settings

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
PLOT_SUFFIX = ".png"


class EvaluationReport(msgspec.Struct):
    """``generated``: when ``report.md`` was written (ISO 8601, UTC); ``results``: ``results.json``
    (None where it is missing or unreadable); ``plots``: the PNG files beside them, each served
    by ``GET /v1/admin/evaluation/plots/{name}``."""

    folder: str
    generated: str
    report_markdown: str
    results: dict[str, Any] | None
    plots: list[str]


def evaluation_folder(settings: Settings) -> Path:
    return settings.evaluation_dir if settings.evaluation_dir is not None else settings.data_dir / "evaluation"


def plots(folder: Path) -> list[str]:
    """The plot files of a report folder: PNG files directly in it (nothing else is ever served)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() == PLOT_SUFFIX and p.is_file())
    except OSError:
        return []


def no_report(folder: Path) -> NotFoundException:
    return NotFoundException(detail=f"no evaluation report in {folder}: write one with `hybridrec evaluate --dataset "
                                    f"<dataset folder> --out {folder}`, or point HYBRIDREC_EVALUATION_DIR at the "
                                    "folder an evaluation wrote")


class EvaluationController(Controller):
    path = "/v1/admin/evaluation"
    tags = ["admin"]
    security = SECURITY

    @get("/", opt={"scope": ADMIN}, sync_to_thread=True, summary="The latest offline evaluation report",
         raises=[NotFoundException])
    def report(self, settings: Settings) -> EvaluationReport:
        """The report of ``hybridrec evaluate --out <folder>`` (the ``evaluation_dir`` setting,
        default ``<data_dir>/evaluation``); 404 saying how to write one where there is none."""
        folder = evaluation_folder(settings)
        try:
            markdown = (folder / REPORT_FILE).read_text(encoding="utf-8", errors="replace")
            generated = datetime.fromtimestamp((folder / REPORT_FILE).stat().st_mtime, tz=timezone.utc)
        except OSError:
            raise no_report(folder) from None
        try:
            results = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = None
        return EvaluationReport(str(folder), generated.isoformat(timespec="seconds"), markdown,
                                results if isinstance(results, dict) else None, plots(folder))

    @get("/plots/{name:str}", opt={"scope": ADMIN}, sync_to_thread=True, summary="A plot of the evaluation report",
         media_type="image/png", raises=[NotFoundException])
    def plot(self, name: str, settings: Settings) -> File:
        """One of the report's ``plots`` by its name; any other name is 404."""
        folder = evaluation_folder(settings)
        if name not in plots(folder):
            raise NotFoundException(detail=f"plot {name[:200]!r} not found: the report's plots are "
                                           f"{', '.join(plots(folder)) or 'none'}")
        return File(folder / name, media_type="image/png", content_disposition_type="inline")
