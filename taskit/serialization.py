"""msgpack with one small table of extension types, and errors that name the bad value.

Plain msgpack turns tuples into lists and cannot carry datetimes or Decimals; the table
below closes those gaps so that what a task is given is what the caller passed. Anything
outside the table is refused with `SerializationError` naming where the value sits
(`kwargs['user'] is a User`), before anything reaches Redis. There is no pickle: job data
must never be able to choose code.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

import msgpack

from .exceptions import SerializationError

__all__ = ["MAX_NESTING", "SUPPORTED_TYPES", "dumps", "dumps_call", "loads", "loads_call"]

#: most extension values (tuples, sets, datetimes, ...) nested one inside another. Each one
#: is packed and unpacked by a msgpack call of its own, on the C stack: unpacking takes
#: tens of KB per level, so a crafted blob of one kilobyte nesting 400 tuples would crash
#: the process that reads it; and each level may hold 1,024 levels of lists of its own.
MAX_NESTING = 16


def _tz_key(value: dt.datetime | dt.time) -> str | None:
    tz = value.tzinfo
    return tz.key if isinstance(tz, zoneinfo.ZoneInfo) else None


def _load_datetime(data: list[Any]) -> dt.datetime:
    iso, key = data
    value = dt.datetime.fromisoformat(iso)
    return value.astimezone(zoneinfo.ZoneInfo(key)) if key else value


def _load_time(data: list[Any]) -> dt.time:
    iso, key = data
    value = dt.time.fromisoformat(iso)  # a time's ZoneInfo has no offset, so isoformat() drops it
    return value.replace(tzinfo=zoneinfo.ZoneInfo(key)) if key else value


# type -> (ext code, encode to a msgpack-able value, decode from it). One table, both ways.
_EXT: dict[type, tuple[int, Callable[[Any], Any], Callable[[Any], Any]]] = {
    dt.datetime: (1, lambda v: [v.isoformat(), _tz_key(v)], _load_datetime),
    dt.date: (2, lambda v: v.isoformat(), dt.date.fromisoformat),
    dt.time: (3, lambda v: [v.isoformat(), _tz_key(v)], _load_time),
    dt.timedelta: (4, lambda v: [v.days, v.seconds, v.microseconds], lambda d: dt.timedelta(*d)),
    decimal.Decimal: (5, str, decimal.Decimal),
    uuid.UUID: (6, lambda v: v.bytes, lambda b: uuid.UUID(bytes=b)),
    tuple: (7, list, tuple),
    set: (8, list, set),
    frozenset: (9, list, frozenset),
    int: (10, str, int),  # only integers beyond 64 bits reach the table
}
_DECODERS = {code: decode for code, _, decode in _EXT.values()}
SUPPORTED_TYPES = "None, bool, int, float, str, bytes, list, dict, " + ", ".join(
    t.__name__ for t in _EXT if t is not int
)


_nesting = threading.local()


def _one_level_down(work: Callable[[Any], Any], value: Any, too_deep: type[Exception]) -> Any:
    """`work(value)` one extension level deeper; `too_deep` past MAX_NESTING levels."""
    level = getattr(_nesting, "level", 0)
    if level >= MAX_NESTING:
        raise too_deep(f"tuples, sets and other extension values are nested more than {MAX_NESTING} deep")
    _nesting.level = level + 1
    try:
        return work(value)
    finally:
        _nesting.level = level


def _default(value: Any) -> msgpack.ExtType:
    entry = _EXT.get(type(value))
    if entry is None:
        raise TypeError(type(value))
    code, encode, _ = entry
    return msgpack.ExtType(code, _one_level_down(_packb, encode(value), ValueError))


def _ext_hook(code: int, data: bytes) -> Any:
    decode = _DECODERS.get(code)
    if decode is None:
        raise SerializationError(f"unknown msgpack extension type {code}; written by a newer taskit?")
    return decode(_one_level_down(_unpackb, data, SerializationError))


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)


def _find_unsupported(value: Any, path: str) -> tuple[str, Any] | None:
    """Walk a value the way msgpack would and return the first (path, value) it cannot carry."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str, bytes):
        return None
    if kind is dict:
        for key, item in value.items():
            found = _find_unsupported(key, f"{path} key {key!r}") or _find_unsupported(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    if kind in (list, tuple, set, frozenset):
        for index, item in enumerate(value):
            found = _find_unsupported(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if kind in _EXT:
        return None
    return path, value


def dumps(value: Any, what: str = "value") -> bytes:
    """Pack one value; `what` names it in the error (e.g. "result", "meta")."""
    try:
        return _packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _explain(value, what, exc) from None


def _locate(value: Any, path: str) -> tuple[str, Any] | None:
    """`_find_unsupported`, or None for a value that contains itself (msgpack refused it as too deep)."""
    try:
        return _find_unsupported(value, path)
    except RecursionError:
        return None


def _explain(value: Any, what: str, exc: Exception) -> SerializationError:
    found = _locate(value, what)
    if found is None:  # a container msgpack rejected for another reason (e.g. too deep)
        return SerializationError(f"{what} cannot be serialized with msgpack: {exc}")
    path, bad = found
    kind = type(bad)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return SerializationError(
        f"{path} is {article} {name}, which taskit cannot serialize; "
        f"pass one of: {SUPPORTED_TYPES} (or their containers), e.g. an id instead of an object"
    )


def loads(data: bytes | None) -> Any:
    """Unpack one value; `None` (a missing field) stays `None`."""
    if data is None:
        return None
    try:
        return _unpackb(data)
    except SerializationError:
        raise
    except Exception as exc:  # noqa: BLE001  (msgpack and the ext decoders raise many types)
        raise SerializationError(f"corrupt msgpack data ({len(data)} bytes): {exc}") from None


def dumps_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pack a call's arguments as one blob; errors name `args[i]` or `kwargs['name']`."""
    try:
        return _packb([list(args), kwargs])
    except (TypeError, ValueError, OverflowError) as exc:
        try:  # which half failed? (only on this error path)
            _packb(list(args))
        except (TypeError, ValueError, OverflowError):
            raise _explain(list(args), "args", exc) from None
        raise _explain(kwargs, "kwargs", exc) from None


def loads_call(data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Unpack what `dumps_call` packed; `SerializationError` unless it is [list, dict with str keys]."""
    call = loads(data)
    if type(call) is not list or len(call) != 2 or type(call[0]) is not list or type(call[1]) is not dict:
        raise SerializationError(f"the arguments are not [args list, kwargs dict] but {_kind(call)}")
    args, kwargs = call
    if not all(type(key) is str for key in kwargs):
        raise SerializationError("the keyword arguments have a key that is not a string")
    return tuple(args), kwargs


def _kind(value: Any) -> str:
    if type(value) is list:
        return f"a list of {len(value)}: [{', '.join(type(item).__name__ for item in value[:3])}{', ...' if len(value) > 3 else ''}]"
    return f"a {type(value).__name__}"
