"""Which queues are partitioned, as a Store reads it: queue name -> its partitions' tags.

A partitioned queue is one queue over N tags (keys.partition_tags), so that one hot queue
can span every master of a cluster. Its declaration lives in the home tag
(keys.PARTITIONS: name -> N) so that every producer and worker agrees; a Store keeps what
it read for REFRESH_SECONDS. A queue that was never declared has one partition, its own
tag (keys.queue_tag), and costs no read beyond the periodic one of the hash.

Producers pick a partition per job (`Partitions.tag_for`): round robin per process, or a
stable hash of a partition key. Jobs with a custom id go to the first partition (the
queue's own tag): everything that later finds such a job from its id and queue name
(finish, cancel, requeue, the directory) then needs no declaration. Workers claim from
`Partition` names (keys.Partition), rotated at each claim (`Rotation`).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import keys

#: how long a Store trusts the declarations it read
REFRESH_SECONDS = 10.0


class Partitions:
    """The declarations of one Redis, cached; `read` is the hash read (a Store call)."""

    def __init__(self, read: Callable[[], dict[bytes, bytes]]) -> None:
        self._read = read
        self._declared: dict[str, int] = {}
        self._read_at = -REFRESH_SECONDS
        self._lock = threading.Lock()
        self._turns: dict[str, int] = {}

    def declared(self, refresh: bool = False) -> dict[str, int]:
        """name -> number of partitions, of the queues declared with more than one."""
        if refresh or self.stale():
            self.update(self._read())
        return self._declared

    def stale(self) -> bool:
        """Whether what this Store read is older than REFRESH_SECONDS (or was never read)."""
        return time.monotonic() - self._read_at >= REFRESH_SECONDS

    def update(self, raw: dict[bytes, bytes]) -> None:
        """Take in the declarations hash as read (an enqueue reads it in its own round trip
        when `stale`, so that producers stay at one round trip: storage/store.py)."""
        declared = {}
        for name, count in raw.items():
            try:
                number = int(count)
            except ValueError:
                continue
            if number > 1:
                declared[name.decode(errors="replace")] = number
        with self._lock:
            self._declared, self._read_at = declared, time.monotonic()

    def known_tags(self, name: str) -> tuple[str, ...]:
        """`tags` as last read, without reading (a producer's choice: see `update`)."""
        count = self._declared.get(str(name), 1)
        return keys.partition_tags(str(name), count) if count > 1 else (keys.queue_tag(str(name)),)

    def count(self, name: str) -> int:
        return self.declared().get(str(name), 1)

    def tags(self, name: str) -> tuple[str, ...]:
        count = self.count(name)
        return keys.partition_tags(str(name), count) if count > 1 else (keys.queue_tag(str(name)),)

    def expand(self, names: Iterable[str]) -> list[str]:
        """The names as a worker claims from them: each partitioned queue as its
        `keys.Partition`s, in place (priority order kept); other names as they are."""
        out: list[str] = []
        for name in names:
            tags = self.tags(name)
            out += [keys.Partition(str(name), tag) for tag in tags] if len(tags) > 1 else [name]
        return out

    def tag_for(self, name: str, partition_key: Any = None) -> str | None:
        """The tag a new job on `name` goes to: None if the queue has one partition; by a
        stable hash of `partition_key` if given (crc32 of its text: the same in every
        process); else the next partition in turn (round robin per process)."""
        tags = self.known_tags(name)
        if len(tags) == 1:
            return None
        if partition_key is not None:
            raw = partition_key if isinstance(partition_key, bytes) else str(partition_key).encode()
            return tags[zlib.crc32(raw) % len(tags)]
        with self._lock:
            turn = self._turns.get(name, 0)
            self._turns[name] = turn + 1
            return tags[turn % len(tags)]


class Rotation:
    """A worker's claim order: its queues in priority order, each partitioned queue's
    partitions starting one further at each claim, so none is always claimed last."""

    def __init__(self, places: Sequence[str]) -> None:
        self.places = list(places)
        self._groups: list[list[str]] = []
        for place in self.places:
            if self._groups and type(place) is keys.Partition and self._groups[-1][0] == place:
                self._groups[-1].append(place)
            else:
                self._groups.append([place])
        self._turn = 0

    def next(self) -> list[str]:
        if len(self._groups) == len(self.places):
            return self.places
        self._turn += 1
        out: list[str] = []
        for group in self._groups:
            shift = self._turn % len(group)
            out += group[shift:] + group[:shift]
        return out
