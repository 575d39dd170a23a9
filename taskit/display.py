"""Bounded text for log lines and error messages that show job data.

A job's data comes from whoever wrote it: a 100 MiB string, a list nested a thousand
deep, a function name a million characters long. `repr()` or an f-string would build a
string as big as the data (or raise RecursionError) only to print 80 characters of it.
These helpers look at no more of a value than they show, and never raise.

(reprlib does the same job, but it sorts every key of a dict or set, falls back to the
whole repr() of bytes and Decimals, and is several times slower than this on the small
arguments most jobs have: the worker shows every job it runs.)
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import uuid
from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job

#: longest text a log line shows of one value (a job's call, an error message, a name)
LIMIT = 80
#: containers are shown this many levels deep, and this many items of each
_DEPTH, _ITEMS = 3, 6

_PLAIN = frozenset({int, float, bool, type(None), dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID})
_BRACKETS: dict[type, tuple[str, str]] = {list: ("[", "]"), tuple: ("(", ")"), set: ("{", "}"), frozenset: ("frozenset({", "})"), dict: ("{", "}")}


def _show(value: Any, room: int, depth: int) -> str:
    """About `room` characters of repr(value) (more only by a few closing brackets)."""
    kind = type(value)
    if kind is int and value.bit_length() > 1000:  # (repr() refuses past 4,300 digits)
        return f"<int of {value.bit_length()} bits>"
    if kind in _PLAIN:
        return repr(value)
    if kind is str or kind is bytes:
        return repr(value[:room]) + ("..." if len(value) > room else "")
    brackets = _BRACKETS.get(kind)
    if brackets is None:
        return repr(value) if sys.getsizeof(value) <= 200 else f"<{kind.__name__} of {sys.getsizeof(value)} bytes>"
    if not value:
        return repr(value)
    left, right = brackets
    if depth <= 0:
        return f"{left}...{right}"
    parts: list[str] = []
    for item in islice(value.items() if kind is dict else value, _ITEMS):
        if room <= 0:
            break
        if kind is dict:
            key = _show(item[0], room, depth - 1)
            text = f"{key}: {_show(item[1], room - len(key), depth - 1)}"
        else:
            text = _show(item, room, depth - 1)
        parts.append(text)
        room -= len(text) + 2
    if len(parts) < len(value):
        parts.append("...")
    if kind is tuple and len(value) == 1:
        right = "," + right
    return left + ", ".join(parts) + right


#: control characters but newline and tab: C0, DEL and C1 (ESC starts a terminal's escape sequences)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: every control character: a log line stays one line
_LINE_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode()


def terminal_safe(text: str) -> str:
    """`text` with its control characters but newline and tab shown as escapes ('\\x1b'): job
    data printed to a terminal must not drive it (an exception message can carry sequences
    that retitle the window, clear the screen or write to the clipboard)."""
    return _CONTROL.sub(_escaped, text)


def clipped(text: str, limit: int = LIMIT) -> str:
    """`text` cut to `limit` characters (the cut marked with '...'), for a log line: its
    control characters, newlines too, are shown as escapes (so each may take 4 characters),
    so that job data can neither drive the terminal that shows the log nor forge a line."""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return _LINE_CONTROL.sub(_escaped, text)


def shown(value: Any, limit: int = LIMIT) -> str:
    """A repr() of `value` at most `limit` characters long; never raises."""
    try:
        text = _show(value, limit, _DEPTH)
    except Exception:  # noqa: BLE001 (a log line must never fail over the value it shows)
        text = f"<{type(value).__name__}>"
    return clipped(text, limit)


def name(text: str, limit: int = LIMIT) -> str:
    """A name from job data (an id, a function name) as is when it is short printable
    ASCII, else as a bounded repr, so that odd bytes show as escapes."""
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text
    return shown(text, limit)


def call(job: Job, limit: int = LIMIT) -> str:
    """What a log line shows of a job: its description if it was given one, else its call
    as 'module.function(1, 'a', key=...)', at most `limit` characters."""
    if job._description is not None:
        return clipped(job._description, limit)
    try:
        args, kwargs = job.args, job.kwargs
        parts = [_show(a, limit, _DEPTH) for a in args[:_ITEMS]]
        parts += [f"{name(k, 20)}={_show(v, limit, _DEPTH)}" for k, v in islice(kwargs.items(), _ITEMS)]
        if len(args) > _ITEMS or len(kwargs) > _ITEMS:
            parts.append("...")
    except Exception:  # noqa: BLE001 (unreadable arguments: the job fails for that, not the log line)
        parts = ["<unreadable arguments>"]
    return clipped(f"{name(job.func_name, limit)}({', '.join(parts)})", limit)
