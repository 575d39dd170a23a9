"""msgpack with taskit's extension table: what goes in comes out, the rest is refused early."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import uuid
import zoneinfo

import msgpack
import pytest

from taskit import SerializationError, TaskitError
from taskit.serialization import dumps, dumps_call, loads, loads_call

PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


class User:
    def __init__(self, name: str) -> None:
        self.name = name


class Color(enum.Enum):
    RED = "red"


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return len(a) == len(b) and all(
            any(same(ka, kb) and same(va, vb) for kb, vb in b.items()) for ka, va in a.items()
        )
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (dt.datetime, dt.time)):
        assert isinstance(b, (dt.datetime, dt.time))
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and a.utcoffset() == b.utcoffset()
    return a == b


VALUES = {
    "none": None,
    "bool": True,
    "int": -7,
    "float": 2.5,
    "str": "héllo ✓",
    "bytes": b"\x00\xff raw",
    "empty bytes": b"",
    "list": [1, "a", None],
    "dict": {"a": 1, "b": [2, 3]},
    "aware datetime utc": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    "aware datetime fixed offset": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "aware datetime zoneinfo": dt.datetime(2024, 7, 14, 9, 0, tzinfo=PARIS),
    "aware datetime zoneinfo winter": dt.datetime(2024, 1, 14, 9, 0, tzinfo=NEW_YORK),
    "aware datetime zoneinfo fold": dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=PARIS),
    "naive datetime": dt.datetime(2024, 5, 1, 12, 30, 15, 999999),
    "datetime min": dt.datetime.min,
    "datetime max utc": dt.datetime.max.replace(tzinfo=dt.timezone.utc),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(23, 59, 58, 1),
    "time fixed offset": dt.time(8, 15, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
    "timedelta": dt.timedelta(days=3, seconds=5, microseconds=7),
    "negative timedelta": dt.timedelta(days=-1, microseconds=5),
    "decimal": decimal.Decimal("12345678901234567890.000000001"),
    "negative decimal": decimal.Decimal("-0.10"),
    "decimal infinity": decimal.Decimal("-Infinity"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "tuple": (1, "two", 3.0),
    "empty tuple": (),
    "nested tuple": (1, (2, (3, (4,))), [5, (6,)]),
    "set": {1, 2, 3},
    "empty set": set(),
    "frozenset": frozenset({"a", "b"}),
    "int keys": {1: "one", 2: "two"},
    "tuple keys": {(1, 2): "a", (3, (4, 5)): "b"},
    "mixed keys": {None: 0, 1.5: 1, b"raw": 2, True: 3, frozenset({1}): 4, uuid.UUID(int=1): 5, dt.date(2020, 1, 1): 6},
    "int 2**64": 2**64,
    "int -2**64": -(2**64),
    "int 2**63 (just past int64)": 2**63,
    "int -2**63-1 (just past int64)": -(2**63) - 1,
    "uint64 max": 2**64 - 1,
    "int64 min": -(2**63),
    "huge int": 3**300,
    "huge negative int": -(7**200),
    "big int inside containers": {(2**70,): [2**80, (-(2**90),)]},
    "everything nested": {
        "when": dt.datetime(2024, 1, 1, tzinfo=PARIS),
        "ids": {uuid.UUID(int=5)},
        "amounts": (decimal.Decimal("1.10"), decimal.Decimal("2.20")),
        "rows": [{"k": frozenset({(1, 2)})}],
    },
}


@pytest.mark.parametrize("value", list(VALUES.values()), ids=list(VALUES))
def test_round_trip_keeps_value_and_type(value: object) -> None:
    out = loads(dumps(value))
    assert same(out, value), f"{value!r} came back as {out!r}"


def test_aware_datetime_keeps_its_zoneinfo_not_just_its_offset() -> None:
    value = dt.datetime(2024, 3, 30, 12, 0, tzinfo=PARIS)
    out = loads(dumps(value))
    assert isinstance(out.tzinfo, zoneinfo.ZoneInfo) and out.tzinfo.key == "Europe/Paris"
    # the zone, not a frozen offset: arithmetic across the DST change stays correct
    assert (out + dt.timedelta(days=1)).utcoffset() == dt.timedelta(hours=2)


def test_naive_datetime_stays_naive() -> None:
    out = loads(dumps(dt.datetime(2024, 5, 1, 12, 0)))
    assert out.tzinfo is None


def test_time_keeps_its_zoneinfo() -> None:
    value = dt.time(9, 30, tzinfo=PARIS)
    out = loads(dumps(value))
    assert out == value and out.tzinfo == PARIS


def test_datetime_is_not_confused_with_date() -> None:
    # datetime is a subclass of date: the table must not send it down the date path
    out = loads(dumps([dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4)]))
    assert type(out[0]) is dt.date and type(out[1]) is dt.datetime


def test_bool_is_not_turned_into_int_and_back() -> None:
    out = loads(dumps({"flags": (True, False, 1, 0)}))
    assert [type(x) for x in out["flags"]] == [bool, bool, int, int]


def test_str_and_bytes_stay_distinct() -> None:
    assert loads(dumps(["a", b"a"])) == ["a", b"a"]
    assert [type(x) for x in loads(dumps(["a", b"a"]))] == [str, bytes]


def test_call_round_trip() -> None:
    args = (1, (2, 3), {4}, dt.date(2020, 2, 29))
    kwargs = {"when": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "keys": {(1, "a"): b"x"}}
    out_args, out_kwargs = loads_call(dumps_call(args, kwargs))
    assert type(out_args) is tuple
    assert same(out_args, args) and same(out_kwargs, kwargs)


def test_no_pickle_on_the_wire() -> None:
    """The payload is plain msgpack: a stock msgpack reader can walk it without taskit."""
    blob = dumps_call((User.__name__, 1), {"a": [1, 2]})
    assert msgpack.unpackb(blob, raw=False) == [["User", 1], {"a": [1, 2]}]
    assert b"pickle" not in blob and not blob.startswith(b"\x80")  # \x80 opens every pickle protocol >= 2


# -- refusals -------------------------------------------------------------------------


def refusal(args: tuple = (), kwargs: dict | None = None) -> str:
    with pytest.raises(SerializationError) as info:
        dumps_call(args, kwargs or {})
    return str(info.value)


def test_refusal_names_kwarg_path_and_type() -> None:
    message = refusal((1,), {"user": User("ann")})
    assert message.startswith("kwargs['user'] is a test_serialization.User")
    assert "cannot serialize" in message
    assert "e.g. an id instead of an object" in message


def test_refusal_names_nested_arg_path() -> None:
    message = refusal((1, [object(), 2]))
    assert message.startswith("args[1][0] is an object")


def test_refusal_deep_in_dicts_and_tuples() -> None:
    message = refusal((), {"order": {"lines": ({"sku": 1}, {"sku": 2, "item": User("x")})}})
    assert message.startswith("kwargs['order']['lines'][1]['item'] is a test_serialization.User")


def test_refusal_of_a_bad_dict_key_says_it_is_a_key() -> None:
    key = User("k")
    message = refusal(({key: 1},))
    assert message.startswith(f"args[0] key {key!r} is a test_serialization.User")


def test_refusal_lists_what_is_supported() -> None:
    message = refusal((User("u"),))
    for name in ("datetime", "Decimal", "UUID", "tuple", "frozenset", "bytes"):
        assert name in message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        (User("u"), "test_serialization.User"),
        (Color.RED, "test_serialization.Color"),
        (collections.OrderedDict(a=1), "collections.OrderedDict"),  # a dict subclass is not a dict
        (collections.defaultdict(list), "collections.defaultdict"),
        (complex(1, 2), "complex"),
        (range(3), "range"),
        (len, "builtin_function_or_method"),
        (lambda: 1, "function"),
        (ValueError("x"), "ValueError"),
        (dt.timezone.utc, "datetime.timezone"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_unsupported_types_are_refused(value: object, type_name: str) -> None:
    message = refusal((), {"value": value})
    assert message.startswith(f"kwargs['value'] is a{'n' if type_name[0] in 'aeiou' else ''} {type_name}, "), message


def test_dumps_names_what_it_packs() -> None:
    with pytest.raises(SerializationError, match=r"^meta\['who'\] is a test_serialization.User"):
        dumps({"who": User("x")}, "meta")
    with pytest.raises(SerializationError, match=r"^result\[2\] is an object"):
        dumps([1, 2, object()], "result")


def test_a_cycle_is_refused_with_serialization_error() -> None:
    cycle: list = [1]
    cycle.append(cycle)
    with pytest.raises(SerializationError, match=r"^args cannot be serialized"):
        dumps_call((cycle,), {})
    with pytest.raises(SerializationError, match=r"^kwargs cannot be serialized"):
        dumps_call((1,), {"loop": cycle})
    with pytest.raises(SerializationError, match=r"^result cannot be serialized"):
        dumps(cycle, "result")


def test_a_string_utf8_cannot_carry_is_refused() -> None:
    with pytest.raises(SerializationError, match=r"^kwargs cannot be serialized.*surrogate"):
        dumps_call((), {"text": "bad \ud800 surrogate"})


def test_bytearray_and_memoryview_arrive_as_bytes() -> None:
    """msgpack carries them natively as bin; they come back as (immutable) bytes."""
    assert loads(dumps([bytearray(b"ab"), memoryview(b"cd")])) == [b"ab", b"cd"]


def test_serialization_error_is_a_taskit_error_and_a_type_error() -> None:
    assert issubclass(SerializationError, TaskitError)
    assert issubclass(SerializationError, TypeError)
    with pytest.raises(TypeError):  # code that already catches TypeError keeps working
        dumps_call((object(),), {})
    with pytest.raises(TaskitError):
        dumps_call((object(),), {})


# -- corrupt data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"",  # nothing
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array of two with one element
        b"\x91\x01\x02",  # trailing bytes
        b"\xd4\x01\x00",  # a datetime extension holding an int
        b"\xd4\x06\x00",  # a UUID extension holding a 0
        b"\xc7\x03\x63abc",  # an extension type taskit does not know
        b"\x81\x80\x01",  # a dict used as a dict key
        b"garbage that is not msgpack at all \xff\xfe",
    ],
)
def test_corrupt_bytes_raise_serialization_error(blob: bytes) -> None:
    with pytest.raises(SerializationError):
        loads(blob)


def test_unknown_extension_type_is_named() -> None:
    with pytest.raises(SerializationError, match="unknown msgpack extension type 99"):
        loads(msgpack.packb(msgpack.ExtType(99, b"x")))


def test_loads_of_none_is_none() -> None:
    assert loads(None) is None

