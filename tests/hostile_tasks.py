"""A task module with traps in it, for tests/test_bad_jobs.py: names that a job could walk
through to set code off, had the worker looked them up with getattr."""

from __future__ import annotations

import importlib
import os
from typing import Any

from taskit import task

#: every name this module's lazy __getattr__ was asked for (it must never be asked)
LAZY_LOOKUPS: list[str] = []
#: every time the trap descriptor below ran
DESCRIPTOR_RUNS: list[str] = []


@task
def swallow(*args: Any, **kwargs: Any) -> int:
    """Takes anything; with TASKIT_SIDE_EFFECTS set, appends a line there each time it runs."""
    path = os.environ.get("TASKIT_SIDE_EFFECTS")
    if path:
        with open(path, "a") as out:
            out.write("ran\n")
    return len(args) + len(kwargs)


def plain(x: int) -> int:
    """A plain function (no @task): a worker given this module may run it."""
    return x + 1


class _OutsideAppContext:
    """Like Flask's `current_app` outside an application context: touching any attribute,
    even `__class__`, raises RuntimeError."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("Working outside of application context.")

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: PLE0221
        raise RuntimeError("Working outside of application context.")


current_app = _OutsideAppContext()


class _Trap:
    """A descriptor that records being run."""

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        DESCRIPTOR_RUNS.append("ran")
        return plain


class Holder:
    trap = _Trap()

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    @classmethod
    def name_of(cls) -> str:
        return cls.__name__

    @property
    def prop(self) -> int:
        DESCRIPTOR_RUNS.append("prop")
        return 1


def __getattr__(name: str) -> Any:
    """A lazy module attribute, as some libraries define: imports whatever it is asked for."""
    if name.startswith("_"):  # (the import system and test tools probe for __path__, _mock_name, ...)
        raise AttributeError(name)
    LAZY_LOOKUPS.append(name)
    try:
        return importlib.import_module(name)
    except ImportError:
        raise AttributeError(name) from None
