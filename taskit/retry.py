"""Retry policies: how many times, and how long to wait between attempts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .exceptions import ConfigurationError


class Retry:
    """Retry a failed job up to `max` times, waiting `interval` seconds (one number, or one per attempt)."""

    def __init__(self, max: int = 1, interval: float | Sequence[float] = 0) -> None:
        if isinstance(max, bool) or not isinstance(max, int) or max < 1:
            raise ConfigurationError(f"Retry(max=...) must be a positive int, not {max!r}")
        intervals = [interval] if isinstance(interval, (int, float)) else list(interval)
        if not intervals or any(isinstance(i, bool) or not isinstance(i, (int, float)) or i < 0 for i in intervals):
            raise ConfigurationError(f"Retry(interval=...) must be seconds >= 0 or a list of them, not {interval!r}")
        self.max = max
        self.intervals = intervals

    def to_data(self) -> dict[str, Any]:
        return {"max": self.max, "intervals": self.intervals}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Retry:
        return cls(max=data["max"], interval=data["intervals"])

    def next_delay(self, retries_done: int, exc: BaseException) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if retries_done >= self.max:
            return None
        return float(self.intervals[min(retries_done, len(self.intervals) - 1)])

    def __repr__(self) -> str:
        return f"Retry(max={self.max}, interval={self.intervals})"
