"""Replies read straight off a connection's socket, for the commands `store._Direct` sends.

`_Direct` packs its commands itself; reading their replies here too costs a round trip a
few µs less Python than redis-py's reader (its layers of buffer, parser and connection
methods are most of the client's time for a one-number reply such as an enqueue's, and
the reply an idle worker wakes to is read when every line runs cold). The replies are what
redis-py's parser gives: bytes, int, list, dict, float, bool, None, and an error reply as
its exception (redis-py's own class for it), in its place.
"""

from __future__ import annotations

import socket
from typing import Any

import redis
from redis._parsers import BaseParser

#: how much one recv asks for
CHUNK = 65536
#: how much one recv asks for at most, for the rest of a long string
BIG_CHUNK = 1 << 20
#: the aggregate types whose elements follow as replies (array, set)
_AGGREGATES = frozenset(b"*~")


class Replies:
    """The replies arriving on `sock`, read in order (`read`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.at = 0

    def read(self, count: int) -> list[Any]:
        """The next `count` replies; what Redis sent past them is an error (the connection
        would be out of step with its commands)."""
        try:
            replies = [self._reply() for _ in range(count)]
        except TimeoutError:
            raise redis.TimeoutError("Timeout reading from socket") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Error while reading from socket: {exc}") from None
        if self.at != len(self.data):
            raise redis.InvalidResponse(f"Redis sent {len(self.data) - self.at} bytes more than {count} replies")
        return replies

    def _line(self) -> bytes:
        end = self.data.find(b"\r\n", self.at)
        while end < 0:
            self._fill(len(self.data) - self.at + 1)  # (one recv() more)
            end = self.data.find(b"\r\n", self.at)
        line = self.data[self.at:end]
        self.at = end + 2
        return line

    def _bulk(self, length: int) -> bytes:
        if len(self.data) - self.at < length + 2:
            self._fill(length + 2)
        start = self.at
        self.at += length + 2
        return self.data[start:start + length]

    def _fill(self, size: int) -> None:
        """Read on until `size` bytes from `at` are in, joined once: a string longer than
        many recv()s is not copied again at each (96 MB took 70 s so, 0.7 s through redis-py)."""
        chunks = [self.data[self.at:]]
        have = len(chunks[0])
        while have < size:
            chunk = self.sock.recv(max(CHUNK, min(size - have, BIG_CHUNK)))
            if not chunk:
                raise redis.ConnectionError("Connection closed by server.")
            chunks.append(chunk)
            have += len(chunk)
        self.data, self.at = b"".join(chunks), 0

    def _reply(self) -> Any:
        line = self._line()
        if not line:
            raise redis.InvalidResponse("Protocol error, got an empty line")
        kind, rest = line[0], line[1:]
        if kind == 36:  # $ bulk string
            length = int(rest)
            return None if length < 0 else self._bulk(length)
        if kind == 58:  # : integer
            return int(rest)
        if kind in _AGGREGATES:
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        if kind == 43:  # + simple string
            return rest
        if kind == 45:  # - error
            return _error(rest)
        if kind == 95:  # _ null
            return None
        if kind == 37:  # % map
            return {self._reply(): self._reply() for _ in range(int(rest))}
        if kind == 35:  # # boolean
            return rest == b"t"
        if kind == 44:  # , double
            return float(rest)
        if kind == 40:  # ( big number
            return int(rest)
        if kind == 61:  # = verbatim string: its format, ':', then the text
            return self._bulk(int(rest))[4:]
        if kind == 33:  # ! bulk error
            return _error(self._bulk(int(rest)))
        if kind == 62:  # > push (RESP3: a tracking invalidation...): no reply to a command, passed
            for _ in range(int(rest)):  # over as redis-py does, or the replies after it would be
                self._reply()  # read one command late
            return self._reply()
        raise redis.InvalidResponse(f"Protocol error, got {line[:100]!r}")


def _error(text: bytes) -> Exception:
    """An error reply as redis-py's parser gives it: its ResponseError, in its place; one
    that says the connection cannot be used (LOADING, a failed AUTH) raised, as redis-py does."""
    error = BaseParser.parse_error(text.decode("utf-8", "replace"))
    if isinstance(error, redis.ConnectionError):
        raise error
    return error
