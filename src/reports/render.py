"""A report as a file: JSON, CSV (`src.reports.render_csv`) or HTML (`src.reports.render_html`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from src.reports.data import ReportData
from src.reports.render_csv import render_csv
from src.reports.render_html import render_html
from src.reports.schemas import ReportFormat

CONTENT_TYPES = {
    ReportFormat.JSON: "application/json",
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.HTML: "text/html; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class RenderedReport:
    content: bytes
    content_type: str
    filename: str


def render(data: ReportData, report_format: ReportFormat) -> RenderedReport:
    """The report as a file of the format."""
    if report_format is ReportFormat.JSON:
        text = json.dumps(data.to_document(), ensure_ascii=False, indent=2) + "\n"
    elif report_format is ReportFormat.CSV:
        text = render_csv(data)
    else:
        text = render_html(data)
    stamp = data.generated_at.strftime("%Y%m%d-%H%M%S")
    scope = data.group_id if data.group_id is not None else "all"
    return RenderedReport(
        content=text.encode(),
        content_type=CONTENT_TYPES[report_format],
        filename=f"comments-report-{scope}-{stamp}.{report_format.value}",
    )
