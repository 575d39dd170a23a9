"""Charts as inline SVG geometry: numbers only, drawn by the templates (no JavaScript)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 600, 140, 4


@dataclass
class Chart:
    """Two series over time: `done` and `failed` as SVG polyline points, scaled to `top`."""

    title: str
    done: str
    failed: str
    top: int
    total_done: int
    total_failed: int
    start: str
    end: str
    width: int = WIDTH
    height: int = HEIGHT


def chart(title: str, minutes: list[tuple[int, int, int]]) -> Chart:
    """A chart of (Unix minute, finished, failed) rows, oldest first."""
    top = max([1] + [max(done, failed) for _, done, failed in minutes])
    step = (WIDTH - 2 * PAD) / max(1, len(minutes) - 1)

    def points(column: int) -> str:
        return " ".join(
            f"{PAD + i * step:.1f},{HEIGHT - PAD - row[column] / top * (HEIGHT - 2 * PAD):.1f}"
            for i, row in enumerate(minutes)
        )

    def label(minute: int) -> str:
        return f"{dt.datetime.fromtimestamp(minute * 60, tz=dt.timezone.utc):%H:%M} UTC"

    return Chart(
        title=title,
        done=points(1),
        failed=points(2),
        top=top,
        total_done=sum(row[1] for row in minutes),
        total_failed=sum(row[2] for row in minutes),
        start=label(minutes[0][0]) if minutes else "",
        end=label(minutes[-1][0]) if minutes else "",
    )
