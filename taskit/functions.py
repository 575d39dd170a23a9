"""Which name means which function, and which functions a worker may run.

A job stores only a function's name. A worker turns the name back into code through
this module, and only for code it was given (DESIGN.md, principle 2):

* a registered `@task` (by its name);
* a function this same process enqueued (so a script can enqueue its own functions,
  including ones defined in `__main__`, and run them with an in-process `Worker`);
* a function defined in a module the worker was told to import, or a submodule of
  such a package, that is already imported (or a staticmethod or classmethod of a
  class defined there). Job data never triggers an import, and never runs code to find
  a name: see `lookup`.

Anything else raises `TaskNotAllowedError` naming the function and the reason.
"""

from __future__ import annotations

import inspect
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

from .display import shown
from .exceptions import ConfigurationError, TaskNotAllowedError

_MISSING = object()

_lock = threading.Lock()
#: name -> the callable to run (the task's function for @task)
_tasks: dict[str, Callable[..., Any]] = {}
#: name -> plain functions enqueued by this process
_enqueued: dict[str, Callable[..., Any]] = {}


def qualified_name(fn: Callable[..., Any]) -> str:
    """'module.qualname' of a function; refuses what a worker could never find by name."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname:
        raise ConfigurationError(f"{fn!r} has no module-level name; enqueue a function defined with def")
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigurationError(
            f"{module}.{qualname} is a lambda or a function defined inside another function; "
            "a worker can only run functions defined at module level"
        )
    if inspect.ismethod(fn) and not isinstance(fn.__self__, type):
        # a job stores only the name: the instance would be lost, and a worker in another
        # process would call the plain function with the arguments shifted by one
        raise ConfigurationError(
            f"{module}.{qualname} is a method bound to an instance, which a job cannot carry; "
            "enqueue a module-level function (or a staticmethod or classmethod) and pass an id"
        )
    return f"{module}.{qualname}"


def register_task(name: str, fn: Callable[..., Any]) -> None:
    with _lock:
        existing = _tasks.get(name)
        if existing is not None and existing is not fn and qualified_name(existing) != qualified_name(fn):
            raise ConfigurationError(f"two different tasks are named {name!r}; give one of them name=...")
        _tasks[name] = fn


def remember(name: str, fn: Callable[..., Any]) -> None:
    """Note that this process enqueued `fn` under `name`, so an in-process worker may run it."""
    if _enqueued.get(name) is not fn:
        with _lock:
            _enqueued[name] = fn


def registered_tasks() -> dict[str, Callable[..., Any]]:
    with _lock:
        return dict(_tasks)


def enqueued_names() -> list[str]:
    """Names of the plain functions this process enqueued (an in-process worker may run them)."""
    with _lock:
        return list(_enqueued)


def resolve(name: str, allowed_modules: Iterable[str] = ()) -> Callable[..., Any]:
    """The function a job named, if this worker may run it; else `TaskNotAllowedError`."""
    fn = _tasks.get(name) or _enqueued.get(name)
    if fn is not None:
        return fn
    allowed = tuple(allowed_modules)
    module_name, attr = _split(name)
    if module_name is None:
        raise TaskNotAllowedError(
            f"{shown(name, 200)} is not a registered task, and no imported module defines it "
            f"(worker modules: {', '.join(allowed) or 'none'})"
        )
    if not any(module_name == m or module_name.startswith(m + ".") for m in allowed):
        raise TaskNotAllowedError(
            f"{shown(name, 200)} is not a registered task and module {module_name!r} is not one the worker "
            f"was given (worker modules: {', '.join(allowed) or 'none'}); refusing to run it"
        )
    found = _defined_in(module_name, attr)
    if found is None:
        raise TaskNotAllowedError(
            f"{shown(name, 200)}: module {module_name!r} defines no function {shown(attr, 200)} "
            "(names imported into a module from elsewhere do not count)"
        )
    return found


def lookup(name: str) -> tuple[object, object] | None:
    """(the object `name` denotes, the object it was found in), among imported modules only.

    Looks only at names already there: the longest imported module that prefixes `name`,
    then each class below it, in their `__dict__`s (`inspect.getattr_static`). No module
    `__getattr__`, property, descriptor or metaclass hook runs, and nothing is imported,
    so job data cannot set code off by naming it. The walk goes through classes only: an
    object (a proxy such as Flask's `current_app`) or a module imported into another ends it.
    """
    module_name, attr = _split(name)
    if module_name is None:
        return None
    owner: object = None
    target: object = sys.modules[module_name]
    for part in attr.split("."):
        if owner is not None and not _is_class(target):
            return None
        owner, target = target, inspect.getattr_static(target, part, _MISSING)
        if target is _MISSING:
            return None
    return target, owner


def _defined_in(module_name: str, attr: str) -> Callable[..., Any] | None:
    """The function or task `module_name.attr` if that module defines it: a plain function,
    a `@task`, or a staticmethod or classmethod of a class it defines; never a class, a
    builtin, or another callable object (running those is not calling a function)."""
    found = lookup(f"{module_name}.{attr}")
    if found is None:
        return None
    target, owner = found
    if type(target) in (staticmethod, classmethod):
        fn = target.__func__  # type: ignore[attr-defined]
    else:
        fn = target
    if not (type(fn) is types.FunctionType or issubclass(type(fn), _task_class())):
        return None
    if getattr(fn, "__module__", None) != module_name or getattr(fn, "__qualname__", None) != attr:
        return None
    if type(target) is classmethod:
        return types.MethodType(fn, owner)
    return fn


def _is_class(value: object) -> bool:
    """Whether `value` is a class, asked of its real type: `isinstance` would read a
    `__class__` that a proxy object may fake (or raise from)."""
    return issubclass(type(value), type)


def _task_class() -> type:
    from .task import Task  # task.py imports this module

    return Task


def _split(name: str) -> tuple[str | None, str]:
    """The longest imported module that prefixes `name`, and the rest of the name."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        if module_name in sys.modules:
            return module_name, ".".join(parts[i:])
    return None, name
