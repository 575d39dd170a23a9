"""Retry policies: whether a failed job runs again, and how long it waits first.

Two spellings of one policy:

    Retry(max=3, interval=[1, 10, 60])                      # RQ's
    Retry(stop=stop_after_attempt(5), wait=wait_exponential(max=60),
          retry=retry_if_exception_type(ConnectionError))  # tenacity's strategies

A policy travels with its job, so it is stored as plain msgpack data, never pickled:
each tenacity strategy is described by its name and the constructor arguments that
rebuild it (the table `_STRATEGIES`), and exception classes by their dotted names.
Anything the table cannot describe (a lambda, a custom class) is refused when the
policy is built, long before a worker sees it.

On the worker, exception names are resolved only among modules already imported: job
data never triggers an import. A name that does not resolve matches nothing, which is
exact: an exception whose class was never imported cannot have been raised.

The worker never sleeps inside tenacity. On a failure it asks `next_delay` (retry? wait
how long? stop?) and then re-enqueues the job, schedules it, or fails it for good. A
task may also ask for another attempt itself by raising `RetryLater`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tenacity

from .display import shown
from .exceptions import ConfigurationError, TaskitError
from .functions import lookup
from .schedule import run_at

if TYPE_CHECKING:
    from tenacity.retry import retry_base
    from tenacity.stop import stop_base
    from tenacity.wait import wait_base

    from .job import Job

__all__ = ["DEFAULT_MAX", "Retry", "RetryLater", "delay_after_failure"]

log = logging.getLogger("taskit.retry")

#: retries allowed when neither `max` nor `stop` is given (Celery's default too)
DEFAULT_MAX = 3
#: most levels of strategies combined into one (`a | b | c` is two): a stored policy is
#: job data, and a crafted one nested thousands deep must not exhaust the reader's stack
MAX_DEPTH = 32

# How a strategy is rebuilt from data:
#   "args"       constructor argument -> the attribute that holds its value
#   "nested"     the attribute holding the child strategies (passed positionally)
#   "exceptions" the attribute holding the exception class(es)
#   "singleton"  a module-level instance, nothing to store
_STRATEGIES: dict[str, tuple[str, str, Any]] = {
    "stop_after_attempt": ("stop", "args", {"max_attempt_number": "max_attempt_number"}),
    "stop_after_delay": ("stop", "args", {"max_delay": "max_delay"}),
    "stop_before_delay": ("stop", "args", {"max_delay": "max_delay"}),
    "stop_never": ("stop", "singleton", None),
    "stop_any": ("stop", "nested", "stops"),
    "stop_all": ("stop", "nested", "stops"),
    "wait_none": ("wait", "args", {}),
    "wait_fixed": ("wait", "args", {"wait": "wait_fixed"}),
    "wait_random": ("wait", "args", {"min": "wait_random_min", "max": "wait_random_max"}),
    "wait_incrementing": ("wait", "args", {"start": "start", "increment": "increment", "max": "max"}),
    "wait_exponential": ("wait", "args", {"multiplier": "multiplier", "max": "max", "exp_base": "exp_base", "min": "min"}),
    "wait_random_exponential": (
        "wait", "args", {"multiplier": "multiplier", "max": "max", "exp_base": "exp_base", "min": "min"},
    ),
    "wait_combine": ("wait", "nested", "wait_funcs"),
    "wait_chain": ("wait", "nested", "strategies"),
    "retry_if_exception_type": ("retry", "exceptions", "exception_types"),
    "retry_if_not_exception_type": ("retry", "exceptions", "exception_types"),
    "retry_if_exception_cause_type": ("retry", "exceptions", "exception_cause_types"),
    "retry_always": ("retry", "singleton", None),
    "retry_never": ("retry", "singleton", None),
    "retry_any": ("retry", "nested", "retries"),
    "retry_all": ("retry", "nested", "retries"),
}
# strategies this tenacity version lacks are left out
_STRATEGIES = {name: spec for name, spec in _STRATEGIES.items() if hasattr(tenacity, name)}
_CLASS_OF = {
    name: type(getattr(tenacity, name)) if form == "singleton" else getattr(tenacity, name)
    for name, (_, form, _) in _STRATEGIES.items()
}
_NAME_OF = {cls: name for name, cls in _CLASS_OF.items()}
_RETRYING = tenacity.Retrying()


class Retry:
    """A retry policy for jobs: `Retry(max=3, interval=10)` or `Retry(stop=..., wait=..., retry=...)`.

    max: retries after the first attempt (default 3 when `stop` is not given either).
    interval: seconds before each retry, one number or one per retry (the last repeats).
    stop / wait / retry: tenacity strategies; `retry` filters which exceptions are
        retried (default: any Exception). `max` and `stop` together: whichever ends first.
    """

    def __init__(
        self,
        max: int | None = None,
        interval: float | Sequence[float] | None = None,
        *,
        stop: stop_base | None = None,
        wait: wait_base | None = None,
        retry: retry_base | None = None,
    ) -> None:
        if max is not None and (isinstance(max, bool) or not isinstance(max, int) or max < 1):
            raise ConfigurationError(f"Retry(max=...) must be a positive int, not {max!r}")
        if interval is not None and wait is not None:
            raise ConfigurationError("Retry takes interval= or wait=, not both")
        intervals = _intervals(0 if interval is None else interval)
        self.max = DEFAULT_MAX if max is None and stop is None else max
        self.intervals = intervals
        self._given: dict[str, Any] = {"stop": stop, "wait": wait, "retry": retry}
        self._data: dict[str, Any] = {"max": self.max, "intervals": intervals}
        for kind, strategy in self._given.items():
            if strategy is not None:
                self._data[kind] = _describe(strategy, kind, f"Retry({kind}=...)")

    # -- data ----------------------------------------------------------------------

    def to_data(self) -> dict[str, Any]:
        """The policy as msgpack-able data (what the job's `retry` field holds)."""
        return dict(self._data)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Retry:
        """Rebuild a stored policy; `ConfigurationError` if the data is not one we wrote.

        Strategies are rebuilt when used, so exception classes are looked up after the
        task ran (it may have imported them) and a reader that lacks them can still load the job.
        """
        if not isinstance(data, dict):
            raise ConfigurationError(f"a retry policy is a dict, not {type(data).__name__}")
        self = cls.__new__(cls)
        max_ = data.get("max")
        if max_ is not None and (isinstance(max_, bool) or not isinstance(max_, int) or max_ < 1):
            raise ConfigurationError(f"stored retry max {shown(max_)} is not a positive int")
        if max_ is None and data.get("stop") is None:
            max_ = DEFAULT_MAX  # as Retry() does: never unbounded by omission
        self.max = max_
        self.intervals = _intervals(data.get("intervals", [0]))
        self._given = {"stop": None, "wait": None, "retry": None}
        self._data = {"max": max_, "intervals": self.intervals}
        for kind in ("stop", "wait", "retry"):
            if data.get(kind) is not None:
                _check(data[kind], kind)
                self._data[kind] = data[kind]
        return self

    def _strategy(self, kind: str) -> Any:
        given = self._given[kind]
        if given is not None:
            return given
        desc = self._data.get(kind)
        return None if desc is None else _build(desc)

    @property
    def stop(self) -> stop_base | None:
        """The tenacity stop strategy, or None (then only `max` ends the retries)."""
        return self._strategy("stop")

    @property
    def wait(self) -> wait_base | None:
        """The tenacity wait strategy, or None (then `intervals` apply)."""
        return self._strategy("wait")

    @property
    def retry(self) -> retry_base | None:
        """The tenacity retry filter, or None (then any Exception is retried)."""
        return self._strategy("retry")

    # -- deciding ------------------------------------------------------------------

    def next_delay(self, retries_done: int, exc: BaseException, elapsed: float = 0.0) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        retries_done: retries so far (the attempt that just failed is `retries_done + 1`);
        elapsed: seconds since the job was created, for `stop_after_delay`.
        """
        state = call_state(retries_done + 1, exc, elapsed)
        retry = self.retry
        if not (retry(state) if retry is not None else isinstance(exc, Exception)):
            return None
        return self.delay_unless_stopped(state, retries_done)

    def delay_unless_stopped(self, state: tenacity.RetryCallState, retries_done: int, delay: float | None = None) -> float | None:
        """The wait (or `delay`), or None when `max` or `stop` ends the retries; no exception filter."""
        if self.max is not None and retries_done >= self.max:
            return None
        if delay is None:
            delay = self.wait_for(state, retries_done)
        if not math.isfinite(delay):
            return None
        state.upcoming_sleep = delay = max(0.0, delay)
        stop = self.stop
        if stop is not None and stop(state):
            return None
        return delay

    def wait_for(self, state: tenacity.RetryCallState, retries_done: int) -> float:
        """The policy's wait before retry number `retries_done + 1`, budget aside."""
        wait = self.wait
        if wait is not None:
            return float(wait(state))
        return float(self.intervals[min(retries_done, len(self.intervals) - 1)])

    def __repr__(self) -> str:
        parts = [] if self.max is None else [f"max={self.max}"]
        if "wait" not in self._data:
            parts.append(f"interval={self.intervals if len(self.intervals) > 1 else self.intervals[0]}")
        parts += [f"{kind}={_show(self._data[kind])}" for kind in ("stop", "wait", "retry") if kind in self._data]
        return f"Retry({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retry) and other._data == self._data

    __hash__ = None  # type: ignore[assignment]


class RetryLater(TaskitError):
    """Raised by a task to run again later: `raise RetryLater(countdown=30)`.

    countdown: seconds or a timedelta; eta: an aware datetime; neither: the job's Retry
    policy's wait (or at once). The retry filter is not consulted (the task asked), but the
    budget is: `max_retries` if given, else the job's policy (`max`/`stop`), else 3.
    Beyond it the job fails with this exception as its error.
    """

    def __init__(
        self,
        message: str = "",
        *,
        countdown: float | dt.timedelta | None = None,
        eta: dt.datetime | None = None,
        max_retries: int | None = None,
    ) -> None:
        if countdown is not None or eta is not None:
            run_at(countdown, eta)  # the checks every countdown and eta goes through
        if isinstance(countdown, dt.timedelta):
            countdown = countdown.total_seconds()
        if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0):
            raise ConfigurationError(f"RetryLater max_retries must be an int >= 0, not {max_retries!r}")
        self.countdown, self.eta, self.max_retries = countdown, eta, max_retries
        when = f" in {countdown:g}s" if countdown is not None else f" at {eta.isoformat()}" if eta else ""
        super().__init__(f"the task asked to be retried{when}" + (f": {message}" if message else ""))


def delay_after_failure(job: Job, exc: BaseException, now: float) -> float | None:
    """What the worker asks when a job failed: seconds until its next attempt, or None to fail it.

    Never raises: a policy that cannot answer fails the job (and says why in the log).
    """
    try:
        elapsed = now - job.created_at.timestamp() if job.created_at is not None else 0.0
        if isinstance(exc, RetryLater):
            return _requested_delay(job, exc, now, elapsed)
        if job.retry is None:
            return None
        return job.retry.next_delay(job.retries, exc, elapsed)
    except Exception as error:  # noqa: BLE001 - the job must be recorded whatever its policy does
        log.error("job %s: its retry policy failed (%s: %s); failing the job", job.id, type(error).__name__, error)
        return None


def _requested_delay(job: Job, exc: RetryLater, now: float, elapsed: float) -> float | None:
    retries, policy = job.retries, job.retry
    state = call_state(retries + 1, exc, elapsed)
    asked = max(0.0, exc.eta.timestamp() - now) if exc.eta is not None else exc.countdown
    if exc.max_retries is not None:
        if retries >= exc.max_retries:
            return None
        if asked is None and policy is not None:
            asked = policy.wait_for(state, retries)  # the policy's wait, without its budget
        return max(0.0, asked) if asked is not None and math.isfinite(asked) else 0.0
    if policy is not None:
        return policy.delay_unless_stopped(state, retries, asked)
    return None if retries >= DEFAULT_MAX else asked or 0.0


def call_state(attempt: int, exc: BaseException, elapsed: float) -> tenacity.RetryCallState:
    """A tenacity call state for a failed attempt, as if tenacity had run it."""
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = attempt
    state.start_time = 0.0
    state.outcome_timestamp = max(0.0, elapsed)
    outcome = tenacity.Future(attempt)
    outcome.set_exception(exc)
    state.outcome = outcome
    return state


# -- strategies as data ------------------------------------------------------------------


def _intervals(interval: object) -> list[float]:
    intervals = [interval] if isinstance(interval, (int, float)) else interval
    if (
        not isinstance(intervals, (list, tuple))
        or not intervals
        or any(isinstance(i, bool) or not isinstance(i, (int, float)) or not i >= 0 or not math.isfinite(i) for i in intervals)
    ):
        raise ConfigurationError(f"Retry(interval=...) must be seconds >= 0 or a list of them, not {shown(interval)}")
    return list(intervals)


def _supported(kind: str) -> str:
    return ", ".join(name for name, spec in _STRATEGIES.items() if spec[0] == kind)


def _describe(strategy: Any, kind: str, where: str, depth: int = 1) -> list[Any]:
    """[name, arguments] for a tenacity strategy, or ConfigurationError naming what is supported."""
    name = _NAME_OF.get(type(strategy))
    if name is not None and _STRATEGIES[name][0] != kind:
        raise ConfigurationError(f"{where}: {name} is a {_STRATEGIES[name][0]} strategy, not a {kind} strategy")
    if name is None:
        what = getattr(strategy, "__qualname__", None) or type(strategy).__name__
        raise ConfigurationError(
            f"{where}: {what} is not a {kind} strategy taskit can store with the job. A retry policy "
            f"travels as data, so custom callables cannot reach the worker; use tenacity's {_supported(kind)} "
            f"(combined with {'+' if kind == 'wait' else '| or &'} if needed)"
        )
    _, form, detail = _STRATEGIES[name]
    if form == "singleton":
        return [name, None]
    if form == "nested":
        if depth >= MAX_DEPTH:
            raise ConfigurationError(f"{where}: strategies are combined more than {MAX_DEPTH} levels deep")
        return [name, [_describe(child, kind, where, depth + 1) for child in getattr(strategy, detail)]]
    if form == "exceptions":
        types = getattr(strategy, detail)
        return [name, [_exception_name(t, where) for t in (types if isinstance(types, tuple) else (types,))]]
    args = {}
    for argument, attribute in detail.items():
        value = getattr(strategy, attribute)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(f"{where}: {name}({argument}={value!r}) must be a number")
        args[argument] = value
    return [name, args]


def _exception_name(cls: object, where: str) -> str:
    if not isinstance(cls, type) or not issubclass(cls, BaseException):
        raise ConfigurationError(f"{where}: {cls!r} is not an exception class")
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _resolve_exception(name) is not cls:
        raise ConfigurationError(
            f"{where}: exception {name} cannot be found by name (defined inside a function?); "
            "a worker looks exception classes up by their module-level name"
        )
    return name


def _resolve_exception(name: str) -> type[BaseException] | None:
    """The exception class `name` denotes, from already-imported modules only, found
    without running any code (`functions.lookup`)."""
    found = lookup(name)
    if found is None:
        return None
    target = found[0]
    if issubclass(type(target), type) and issubclass(target, BaseException):  # type: ignore[arg-type]
        return target  # type: ignore[return-value]
    return None


def _check(desc: Any, kind: str, depth: int = 1) -> None:
    """Refuse stored data that is not a strategy description of the right kind."""
    if not isinstance(desc, (list, tuple)) or len(desc) != 2 or not isinstance(desc[0], str) or desc[0] not in _STRATEGIES:
        raise ConfigurationError(f"stored {kind} strategy {shown(desc)} is not one taskit knows")
    name, args = desc
    spec_kind, form, detail = _STRATEGIES[name]
    if spec_kind != kind:
        raise ConfigurationError(f"stored {kind} strategy is a {spec_kind} strategy ({name})")
    if form == "nested":
        if not isinstance(args, (list, tuple)) or not args:
            raise ConfigurationError(f"stored {name} has no strategies")
        if depth >= MAX_DEPTH:
            raise ConfigurationError(f"stored {kind} strategy nests strategies more than {MAX_DEPTH} deep")
        for child in args:
            _check(child, kind, depth + 1)
    elif form == "exceptions":
        if not isinstance(args, (list, tuple)) or not all(isinstance(a, str) for a in args):
            raise ConfigurationError(f"stored {name} must list exception names")
    elif form == "args" and (
        not isinstance(args, dict)
        or not set(args) <= set(detail)
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in args.values())
    ):
        raise ConfigurationError(f"stored {name} has bad arguments {shown(args)}")


def _build(desc: Any) -> Any:
    """A tenacity strategy from a checked description."""
    name, args = desc
    _, form, _ = _STRATEGIES[name]
    if form == "singleton":
        return getattr(tenacity, name)
    cls = _CLASS_OF[name]
    if form == "nested":
        return cls(*(_build(child) for child in args))
    if form == "exceptions":
        found = []
        for exc_name in args:
            exc_class = _resolve_exception(exc_name)
            if exc_class is None:
                log.debug("retry policy names %s, which is not imported here: it matches nothing", exc_name)
            else:
                found.append(exc_class)
        return cls(tuple(found))
    return cls(**args)


def _show(desc: Any) -> str:
    name, args = desc
    if args is None:
        return name
    if isinstance(args, dict):
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    if args and isinstance(args[0], str):
        return f"{name}({', '.join(a.rpartition('.')[2] for a in args)})"
    return f"{name}({', '.join(_show(child) for child in args)})"
