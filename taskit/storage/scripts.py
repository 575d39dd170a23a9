"""The Lua scripts in taskit/lua, all read once (when the first client's `Scripts` is made)
and each registered per Redis client at its first use.

Each script does one atomic operation; its header documents KEYS and ARGV. A script
takes what it uses of the libs it includes (`source`). The Store sends EVALSHA (itself
on a plain client, else through redis-py) and loads a script on a NOSCRIPT reply, so a
restarted Redis costs one extra round trip, not an error.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

from redis.commands.core import Script

from ..connections import Client

NAMES = (
    "enqueue", "claim", "finish", "heartbeat", "next_queues", "maintain", "requeue", "cancel", "update", "wait",
    "empty", "periodic", "reap", "renew", "settle", "read", "withdraw", "peek",
)


@functools.cache
def source(name: str) -> str:
    """A script's text, with `--#include lib` lines replaced by what the script uses of
    lua/lib/<lib>.lua (`_used`)."""
    lines = _read(f"{name}.lua").splitlines()
    libs = {line: _lib(line.split()[1]) for line in lines if line.startswith("--#include ")}
    kept = _used([chunk for chunks in libs.values() for chunk in chunks],
                 "\n".join(line for line in lines if line not in libs))
    return "\n".join(
        "\n".join(text for _, text in libs[line] if text in kept) if line in libs else line for line in lines
    ) + "\n"


#: a top-level definition of a lib: `local function name(` or `local a, b =`
_DEFINITION = re.compile(r"local (?:function (\w+)|([\w, ]+?) *=)")


@functools.cache
def _lib(name: str) -> list[tuple[set[str], str]]:
    return _chunks(_read(f"lib/{name}.lua"))


def _chunks(text: str) -> list[tuple[set[str], str]]:
    """A lib cut at each top-level `local` (with the comment lines above it): (names it
    defines, its text)."""
    chunks: list[tuple[set[str], list[str]]] = [(set(), [])]
    comments: list[str] = []
    for line in text.splitlines():
        match = _DEFINITION.match(line)
        if match:
            names = match[1] or match[2]
            chunks.append(({name.strip() for name in names.split(",")}, [*comments, line]))
            comments = []
        elif line.startswith("--"):
            comments.append(line)
        else:
            chunks[-1][1].extend([*comments, line])
            comments = []
    chunks[-1][1].extend(comments)
    return [(names, "\n".join(lines)) for names, lines in chunks]


def _used(chunks: list[tuple[set[str], str]], body: str) -> list[str]:
    """The chunks the body uses (outside comments), directly or through another kept
    chunk, in their order.
    Each `local function` of a script is a closure made at every call (about 0.1 µs
    each): a script that pasted whole libs paid for dozens it never calls."""
    kept = [not names for names, _ in chunks]  # (a lib's header: comments only)
    words = _words(body)
    changed = True
    while changed:
        changed = False
        for i, (names, chunk) in enumerate(chunks):
            if not kept[i] and not names.isdisjoint(words):
                kept[i], changed = True, True
                words |= _words(chunk)
    return [chunk for (_, chunk), keep in zip(chunks, kept) if keep]


def _words(code: str) -> set[str]:
    """The names Lua code mentions outside comments and strings (a type name compared,
    'number', or an error message's 'repair' is no call of the lib's `number`, `repair`)."""
    return set(_WORD.findall(_NOT_CODE.sub(" ", code)))


_WORD = re.compile(r"\w+")


#: a comment or a quoted string, matched from the left (a quote in a comment, or `--` in a
#: string, is part of it)
_NOT_CODE = re.compile(r"--[^\n]*|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def _read(path: str) -> str:
    return _texts()[path]


@functools.cache
def _texts() -> dict[str, str]:
    """The text of every script and lib (path under taskit/lua -> text), read at once when the
    first `Scripts` is made: a script put together later, at its first use, comes from this
    copy, as the process's Python came from what was installed when it started, never from
    files an upgrade has since replaced, or removed, under a running process."""
    lua = resources.files("taskit") / "lua"
    texts = {f"{name}.lua": (lua / f"{name}.lua").read_text() for name in NAMES}
    texts.update((f"lib/{lib.name}", lib.read_text()) for lib in (lua / "lib").iterdir() if lib.name.endswith(".lua"))
    return texts


class Scripts:
    """The scripts bound to one client; build one per connection and keep it. Each script
    is put together (`source`) when it is first used: a producer that only enqueues does
    not pay for the worker's."""

    def __init__(self, connection: Client) -> None:
        self._connection = connection
        _texts()  # (read now, put together when used)

    def __getattr__(self, name: str) -> Script:
        if name not in NAMES:
            raise AttributeError(f"taskit has no script {name!r}")
        script = self._connection.register_script(source(name))
        setattr(self, name, script)  # (two threads may both build it: the same script)
        return script

    enqueue: Script
    claim: Script
    finish: Script
    heartbeat: Script
    next_queues: Script
    maintain: Script
    requeue: Script
    cancel: Script
    update: Script
    wait: Script
    empty: Script
    periodic: Script
    reap: Script
    renew: Script
    settle: Script
    read: Script
    withdraw: Script
    peek: Script
