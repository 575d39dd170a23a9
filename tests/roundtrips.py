"""Counting what a taskit call costs against the real test Redis.

Two independent measures, so that a test of "one round trip" cannot pass by accident:

* `counting_client(server)`: a real `redis.Redis` whose connections count how many
  times they write to the socket. Every round trip (one command, or one pipeline of
  many) is exactly one write, so `counter.trips` is the number of round trips.
* `commands_run(server)`: the server's own `INFO commandstats`, read from a second
  client before and after, so the test sees which commands Redis executed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from taskit.storage import scripts


class Trips:
    """Socket writes (= round trips) made by one client since the last `reset()`."""

    def __init__(self) -> None:
        self.trips = 0

    def reset(self) -> None:
        self.trips = 0


def counting_client(server: Any, **options: Any) -> tuple[redis.Redis, Trips]:
    """A client of the test server that counts its round trips; scripts are preloaded.
    `options`: more connection keywords (socket_timeout, ...).

    Preloading the Lua scripts keeps a NOSCRIPT retry (after a Redis restart) out of
    the count; the NOSCRIPT path is tested on its own.
    """
    trips = Trips()

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips.trips += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool(host="127.0.0.1", port=server.port, connection_class=CountingConnection, **options)
    client = redis.Redis(connection_pool=pool)
    for name in scripts.NAMES:
        client.script_load(scripts.source(name))
    client.ping()  # the connection handshake is not part of any measurement
    trips.reset()
    return client, trips


def _commandstats(admin: redis.Redis) -> Counter[str]:
    stats = admin.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


@contextmanager
def commands_run(server: Any) -> Iterator[Counter[str]]:
    """Yields a Counter filled, on exit, with the commands the server ran meanwhile
    (by name, lower case), not counting the INFO calls that measure them."""
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    ran: Counter[str] = Counter()
    before = _commandstats(admin)
    yield ran
    after = _commandstats(admin)
    after["info"] -= 1  # the `before` snapshot itself
    ran.update({name: n - before.get(name, 0) for name, n in after.items() if n - before.get(name, 0) > 0})
    admin.close()
