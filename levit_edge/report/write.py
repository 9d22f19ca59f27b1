"""Write a run's reports: report.json (the contract), report.md and report.html (for people).

The report dict is turned into a small document model (``sections``) and that model is written twice,
as Markdown and as one self-contained HTML file, so both carry the same content. Every string from
the report is escaped by the writer. Output depends only on the dict: no clock, no environment,
stable PNG bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from levit_edge.io import write_atomic, write_json
from levit_edge.report.html import to_html
from levit_edge.report.markdown import to_markdown
from levit_edge.report.sections import build_document


def write_reports(run_dir: Path, report: dict[str, Any]) -> None:
    """Write report.json, report.md and report.html into ``run_dir`` atomically."""
    write_json(run_dir / "report.json", report)
    write_atomic(run_dir / "report.md", to_markdown(build_document(report, plots=False)))
    write_atomic(run_dir / "report.html", to_html(build_document(report, plots=True)))
