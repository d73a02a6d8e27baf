"""Small charts as inline SVG, drawn on the server: finished jobs per period (stacked bars) and
the failure rate per period (a line). No script, no style attribute (the CSP forbids inline
style): shapes carry classes that the dashboard's stylesheet colours, and every bar and point a
`<title>` that says its numbers in words, so the charts read without colour too."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 360
HEIGHT = 120
PAD_LEFT = 30
PAD_BOTTOM = 18
PAD_TOP = 6


@dataclass(frozen=True, slots=True)
class Bucket:
    """The jobs enqueued in one period that have finished, by outcome."""

    label: str
    complete: int = 0
    failed: int = 0
    aborted: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.failed + self.aborted

    @property
    def failure_rate(self) -> float | None:
        """failed / finished, None when none finished."""
        return self.failed / self.finished if self.finished else None


def _frame(title: str, body: list[str], y_max_label: str) -> Markup:
    plot_bottom = HEIGHT - PAD_BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{plot_bottom}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{plot_bottom}" x2="{WIDTH}" y2="{plot_bottom}"/>',
        f'<text class="tick" x="{PAD_LEFT - 3}" y="{PAD_TOP + 8}" text-anchor="end">'
        f"{escape(y_max_label)}</text>",
        f'<text class="tick" x="{PAD_LEFT - 3}" y="{plot_bottom}" text-anchor="end">0</text>',
        *body,
        "</svg>",
    ]
    # Built from numbers and escaped text only.
    return Markup("".join(parts))  # noqa: S704


def _labels(buckets: list[Bucket], slot: float) -> list[str]:
    """Every few buckets' labels under the x axis (at most 6 of them)."""
    step = max(1, -(-len(buckets) // 6))
    return [
        f'<text class="tick" x="{PAD_LEFT + slot * (i + 0.5):.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(bucket.label)}</text>'
        for i, bucket in enumerate(buckets)
        if i % step == 0
    ]


def throughput_chart(buckets: list[Bucket], *, title: str) -> Markup:
    """Stacked bars per period: complete, failed and aborted jobs."""
    top = max([bucket.finished for bucket in buckets] + [1])
    plot_height = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(1, len(buckets))
    body: list[str] = []
    for i, bucket in enumerate(buckets):
        x = PAD_LEFT + slot * i + slot * 0.15
        y = float(HEIGHT - PAD_BOTTOM)
        text = (
            f"{bucket.label}: {bucket.complete} complete, {bucket.failed} failed, "
            f"{bucket.aborted} aborted"
        )
        body.append(f"<g><title>{escape(text)}</title>")
        for count, kind in (
            (bucket.complete, "complete"),
            (bucket.failed, "failed"),
            (bucket.aborted, "aborted"),
        ):
            if count:
                height = plot_height * count / top
                y -= height
                body.append(
                    f'<rect class="bar bar-{kind}" x="{x:.1f}" y="{y:.1f}" '
                    f'width="{slot * 0.7:.1f}" height="{height:.1f}"/>'
                )
        body.append("</g>")
    return _frame(title, body + _labels(buckets, slot), str(top))


def failure_rate_chart(buckets: list[Bucket], *, title: str) -> Markup:
    """The failure rate per period (0-100 %), a point per period with finished jobs."""
    plot_height = HEIGHT - PAD_BOTTOM - PAD_TOP
    slot = (WIDTH - PAD_LEFT) / max(1, len(buckets))
    points: list[tuple[float, float, Bucket, float]] = []
    for i, bucket in enumerate(buckets):
        rate = bucket.failure_rate
        if rate is not None:
            x = PAD_LEFT + slot * (i + 0.5)
            points.append((x, HEIGHT - PAD_BOTTOM - plot_height * rate, bucket, rate))
    body: list[str] = []
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        body.append(f'<polyline class="line" points="{path}"/>')
    for x, y, bucket, rate in points:
        text = f"{bucket.label}: {rate:.0%} failed ({bucket.failed} of {bucket.finished})"
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3">'
            f"<title>{escape(text)}</title></circle>"
        )
    if not points:
        body.append(
            f'<text class="empty" x="{(WIDTH + PAD_LEFT) / 2:.0f}" y="{HEIGHT / 2:.0f}" '
            'text-anchor="middle">no finished jobs</text>'
        )
    return _frame(title, body + _labels(buckets, slot), "100%")


def totals(buckets: list[Bucket]) -> Bucket:
    """All periods together."""
    return Bucket(
        label="total",
        complete=sum(bucket.complete for bucket in buckets),
        failed=sum(bucket.failed for bucket in buckets),
        aborted=sum(bucket.aborted for bucket in buckets),
    )
