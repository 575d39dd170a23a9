"""Jobs finished and failed per minute, summed over queues: the dashboard's charts.

The workers count them per queue and per hour (lua/lib/stats.lua: one hash per queue and
hour, kept a day), so a day summed over every queue reads 25 hashes per queue: with 2,000
queues, 50,000 commands. `History` keeps the sums of the hours that are over, since they no
longer change, and reads again only the hours still being written: each load reads one or
two hashes per queue, and an hour that ends is read once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from .storage.store import Store

#: queues whose counters are read in one round trip
CHUNK = 500
#: how long after its end an hour may still be written to: a worker records a batch with the
#: time it ran, and may record it later (its clock behind ours, a retry while Redis was away)
SETTLE_SECONDS = 600

#: minute -> [finished, failed]
Sums = dict[int, list[int]]


def minute_sums(
    store: Store, queues: Sequence[str], first_minute: int, last_minute: int, problems: list[str] | None = None
) -> Sums:
    """Jobs [finished, failed] per Unix minute in [first_minute, last_minute], summed over
    `queues`; minutes without any are left out. One round trip per CHUNK queues. What cannot
    be read is left out and said in `problems` (see storage/store.py)."""
    sums: Sums = {}
    for start in range(0, len(queues), CHUNK):
        for counts in store.minute_counts(queues[start:start + CHUNK], first_minute, last_minute, problems):
            for column, kind in enumerate(("d", "f")):
                for minute, n in counts[kind].items():
                    sums.setdefault(minute, [0, 0])[column] += n
    return sums


def per_minute(
    store: Store, queues: Sequence[str], minutes: int, now: float, problems: list[str] | None = None
) -> list[tuple[int, int, int]]:
    """(Unix minute, finished, failed) for each of the last `minutes` minutes up to `now`,
    summed over `queues`, read now (for a few queues: a queue's own charts)."""
    last = int(now // 60)
    return _rows(minute_sums(store, queues, last - minutes + 1, last, problems), last - minutes + 1, last)


def _rows(sums: Sums, first: int, last: int) -> list[tuple[int, int, int]]:
    rows = []
    for minute in range(first, last + 1):
        done, failed = sums.get(minute, (0, 0))
        rows.append((minute, done, failed))
    return rows


@dataclass
class _Hour:
    """The sums of an hour that is over, and the queues they cover."""

    queues: frozenset[str] = frozenset()
    sums: Sums = field(default_factory=dict)


class History:
    """`per_minute` over many queues, keeping what no longer changes (see the module's docstring).

    One per Redis: it is kept by the dashboard for the life of its process. A queue that
    appears later is read for the past hours too; a worker whose clock runs more than
    SETTLE_SECONDS behind writes into hours already kept, and those counts are seen only
    by a dashboard started later.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._hours: dict[int, _Hour] = {}
        self._queues: frozenset[str] = frozenset()  # the last set of queues seen, shared by the hours
        self._lock = threading.Lock()  # one load fills the kept hours; another waits and uses them

    def per_minute(
        self, queues: Sequence[str], minutes: int, now: float, problems: list[str] | None = None
    ) -> list[tuple[int, int, int]]:
        """(Unix minute, finished, failed) for each of the last `minutes` minutes up to `now`,
        summed over `queues` (what cannot be read: said in `problems`)."""
        last = int(now // 60)
        first = last - minutes + 1
        live_from = max(int((now - SETTLE_SECONDS) // 3600), first // 60)  # the first hour not over
        sums: Sums = {}
        with self._lock:
            for hour in [h for h in self._hours if h < first // 60]:
                del self._hours[hour]  # out of the window
            for hour in range(first // 60, live_from):
                for minute, (done, failed) in self._settled(hour, queues, problems).sums.items():
                    sums[minute] = [done, failed]
        sums.update(minute_sums(self.store, queues, max(first, live_from * 60), last, problems))
        return _rows(sums, first, last)

    def _settled(self, hour: int, queues: Sequence[str], problems: list[str] | None) -> _Hour:
        """The kept sums of an hour that is over, read now for the queues it does not cover yet."""
        kept = self._hours.setdefault(hour, _Hour())
        missing = [queue for queue in queues if queue not in kept.queues]
        if missing:
            for minute, (done, failed) in minute_sums(self.store, missing, hour * 60, hour * 60 + 59, problems).items():
                counts = kept.sums.setdefault(minute, [0, 0])
                counts[0] += done
                counts[1] += failed
            covered = kept.queues.union(missing)
            if covered != self._queues:
                self._queues = covered
            kept.queues = self._queues  # one set shared by every hour that covers the same queues
        return kept
