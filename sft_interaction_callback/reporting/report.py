"""``build_report``: the PNG plots and the self-contained ``report.html`` of one run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .html_report import render_html
from .plots import PLOTS
from .run_data import NoInteractionsData, RunData, load_run

__all__ = ["NoInteractionsData", "ReportPaths", "build_report"]

REPORT_SUBDIR = "report"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`build_report` wrote the report, and what it left out and why."""

    out_dir: Path
    html: Path
    plots: dict[str, Path]  # file name -> path, in page order
    notes: list[str] = field(default_factory=list)

    @property
    def files(self) -> list[Path]:
        """Every file written: the plots, then the page."""
        return [*self.plots.values(), self.html]


def build_report(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, top: int = 8
) -> ReportPaths:
    """Write the plots and ``report.html`` for a run folder; return their paths.

    ``run_dir`` is the Trainer ``output_dir`` (or the callback's snapshot folder itself).
    ``out_dir`` defaults to ``<snapshot folder>/report``. ``top`` is the number of
    interactions listed per probe and list. Raises :class:`NoInteractionsData` (a
    ``FileNotFoundError``) when the folder holds no interaction data.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive int, got {top!r}")
    run: RunData = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.interactions_dir / REPORT_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    notes = list(run.notes)
    plots: dict[str, Path] = {}
    images: list[tuple[str, str, bytes]] = []
    for spec in PLOTS:
        path = spec.draw(run, out / spec.name, notes)
        if path is not None:
            plots[spec.name] = path
            images.append((spec.name, spec.title, path.read_bytes()))
    html = out / "report.html"
    html.write_text(render_html(run, images, top=top, notes=notes), encoding="utf-8")
    return ReportPaths(out_dir=out, html=html, plots=plots, notes=notes)
