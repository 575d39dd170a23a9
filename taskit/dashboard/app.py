"""The dashboard: a Starlette app over taskit's public reads and actions.

    from taskit.dashboard import create_app
    app = create_app(redis.Redis(), read_only=True)       # serve it: uvicorn module:app
    fastapi_app.mount("/taskit", create_app(...))         # or mount it in your own app

Pages render on the server (Jinja2, autoescaped: job data is shown as text, never as
markup); charts are inline SVG. Endpoints that read are plain functions, which Starlette
runs in its thread pool, so the blocking Redis client never stalls the event loop.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import config, periodic
from ..connections import Client
from ..exceptions import (
    InvalidJobIdError,
    InvalidOperationError,
    NoSuchJobError,
    RedisUnavailableError,
    SerializationError,
    TaskitError,
)
from ..history import History, per_minute
from ..job import Job, JobStatus, validate_id
from ..jobview import (
    SHOWN_BYTES,
    ago,
    call_text,
    details,
    last_error_line,
    read_job,
    read_jobs,
    when,
)
from ..overview import (
    STATES,
    live_workers,
    min_scores,
    read_queue_list,
    read_queues,
    read_workers,
)
from ..queue import Queue
from ..registry import CanceledJobRegistry, FailedJobRegistry
from ..storage.keys import Field
from ..storage.store import Store
from .charts import chart
from .security import (
    CSRF_FIELD,
    CSRF_REFUSED,
    FORM_TOO_BIG,
    Flash,
    Guard,
    csrf_ok,
    csrf_token,
    post_refusal,
    read_form,
    set_csrf_cookie,
)

PAGE_SIZE = 25
#: queues on a page of the overview: what one load costs does not grow with the number of queues
QUEUES_PER_PAGE = 50
#: highest page number served (a bigger one would ask Redis for an index past 2**63)
MAX_PAGE = 1_000_000_000
#: most jobs looked through to fill a page filtered by task name
SCAN_LIMIT = 1000
FLASH_COOKIE = "taskit_flash"

log = logging.getLogger("taskit.dashboard")


def create_app(
    connection: Client | None = None,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
    read_only: bool = False,
    local_only: bool = False,
) -> Starlette:
    """The dashboard as an ASGI app.

    connection: the Redis to show (default: taskit's configured one).
    username + password: require basic auth; token: require `Authorization: Bearer TOKEN`
        (or TOKEN as the basic-auth password). Without them anyone who reaches it may act.
    read_only: show everything, change nothing.
    local_only: answer only requests for localhost / 127.0.0.1 (what `taskit dashboard`
        sets when it serves a loopback address without auth: a guard against DNS rebinding).
    """
    if bool(username) != bool(password):
        raise ValueError("give username and password together")
    pages = _Pages(connection, read_only)
    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/queues/{name}", pages.queue, name="queue"),
        Route("/queues/{name}/empty", pages.empty_queue, methods=["POST"]),
        Route("/queues/{name}/requeue-failed", pages.requeue_failed, methods=["POST"]),
        Route("/jobs", pages.search),
        Route("/jobs/{job_id}", pages.job, name="job"),
        Route("/jobs/{job_id}/{action}", pages.job_action, methods=["POST"]),
        Route("/workers", pages.workers),
        Route("/periodic", pages.periodic),
        Route("/metrics", pages.metrics),
        Mount("/static", StaticFiles(packages=[("taskit.dashboard", "static")]), name="static"),
    ]
    guard = Middleware(Guard, username=username, password=password, token=token, local_only=local_only)
    return Starlette(routes=routes, middleware=[guard], exception_handlers={TaskitError: pages.error})


def _root(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


class _Pages:
    def __init__(self, connection: Client | None, read_only: bool) -> None:
        self._connection = connection
        self.read_only = read_only
        self.flash = Flash()
        self._history: History | None = None
        self.env = Environment(loader=PackageLoader("taskit.dashboard", "templates"), autoescape=True)
        self.env.filters.update(ago=ago, quote=lambda value: urllib.parse.quote(str(value), safe=""))

    @property
    def connection(self) -> Client:
        return config.get_connection(self._connection)

    @property
    def store(self) -> Store:
        return Store.of(self.connection)

    @property
    def history(self) -> History:
        """The charts' history of the Redis shown (kept while it stays the same Redis)."""
        store = self.store
        if self._history is None or self._history.store is not store:
            self._history = History(store)
        return self._history

    # -- rendering ---------------------------------------------------------------------

    def render(
        self, request: Request, template: str, status: int = 200, problems: list[str] | None = None, **context: Any
    ) -> HTMLResponse:
        """A page; `problems` (keys that could not be read: the page shows the rest) are listed
        at its top and logged."""
        problems = list(dict.fromkeys(problems or ()))  # (a key read twice is said once)
        for problem in problems:
            log.warning("%s %s: left out: %s", request.method, request.url.path, problem)
        token, new = csrf_token(request)
        carried = request.cookies.get(FLASH_COOKIE)
        flash = self.flash.unpack(carried) if carried else ""
        html = self.env.get_template(template).render(
            root=_root(request), csrf=token, csrf_field=CSRF_FIELD, read_only=self.read_only, flash=flash,
            now=time.time(), problems=problems, **context,
        )
        response = HTMLResponse(html, status)
        if new:
            set_csrf_cookie(response, request, token)
        if carried is not None:
            response.delete_cookie(FLASH_COOKIE, path=_root(request) + "/")
        return response

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.render(request, "message.html", 404, title="Not found", message=message)

    def error(self, request: Request, exc: Exception) -> Response:
        """A page that could not be read or an action that could not be done (Redis down, a key
        of the wrong type): the reason in one line, on the page and in the log, no traceback."""
        status = 503 if isinstance(exc, RedisUnavailableError) else 500
        log.error("%s %s: %s", request.method, request.url.path, exc)
        if request.url.path.endswith("/metrics"):
            return PlainTextResponse(f"{exc}\n", status)
        return self.render(request, "message.html", status, title="Cannot show this page", message=str(exc))

    # -- pages -------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        """A page of the queues (QUEUES_PER_PAGE, in name order, those whose name holds
        ?match=), the live workers, and the charts of every queue together."""
        now, store = time.time(), self.store
        match = request.query_params.get("match", "").strip()
        page = _page_number(request)
        problems: list[str] = []
        listing = read_queue_list(store, now, (page - 1) * QUEUES_PER_PAGE, QUEUES_PER_PAGE, match, problems)
        alive, workers = live_workers(store, now, problems)
        day = self.history.per_minute(listing.names, 1440, now, problems)
        return self.render(request, "overview.html", problems=problems, title="Overview", listing=listing, states=STATES, at=now,
                           charts=_charts("Every queue", day), alive=alive, dead=workers - alive, match=match,
                           page=page, per_page=QUEUES_PER_PAGE, more=page * QUEUES_PER_PAGE < listing.matching)

    def queue(self, request: Request) -> Response:
        try:
            name = validate_id(request.path_params["name"], "queue name")
        except TaskitError as exc:
            return self.not_found(request, str(exc))
        registry = request.query_params.get("registry", "queued")
        if registry not in STATES:
            registry = "queued"
        task = request.query_params.get("task", "").strip()
        page = _page_number(request)
        now = time.time()
        problems: list[str] = []
        (state,) = read_queues(self.store, [name], now, problems)
        ids: list[str] = []
        more, scanned = False, None
        if state.counts[registry] is not None:  # (else its key holds another type: a problem above)
            ids, more, scanned = self._page(name, registry, task, page, problems)
        rows = [self._row(job_id, job, now) for job_id, job in read_jobs(ids, self.connection)]
        charts = _charts(f"Queue {name}", per_minute(self.store, [name], 1440, now, problems))
        return self.render(request, "queue.html", problems=problems, title=f"Queue {name}", queue=name, state=state, states=STATES,
                           registry=registry, task=task, page=page, more=more, scanned=scanned,
                           rows=rows, charts=charts)

    def _page(
        self, queue: str, registry: str, task: str, page: int, problems: list[str]
    ) -> tuple[list[str], bool, int | None]:
        """The ids of one page (oldest first), whether there are more, and (with a task filter)
        how many jobs were looked through."""
        start = (page - 1) * PAGE_SIZE
        if not task:
            ids = self._ids(queue, registry, start, PAGE_SIZE + 1, problems)
            return ids[:PAGE_SIZE], len(ids) > PAGE_SIZE, None
        matches: list[str] = []
        scanned = 0
        while scanned < SCAN_LIMIT and len(matches) <= start + PAGE_SIZE:
            chunk = self._ids(queue, registry, scanned, 200, problems)
            for job_id, row in zip(chunk, self.store.peek(chunk, SHOWN_BYTES)):  # (big values: not read)
                if isinstance(row, tuple) and row[0].get(Field.FUNC, b"").decode(errors="replace") == task:
                    matches.append(job_id)
            scanned += len(chunk)
            if len(chunk) < 200:
                break
        return matches[start:start + PAGE_SIZE], len(matches) > start + PAGE_SIZE, scanned

    def _ids(self, queue: str, registry: str, start: int, count: int, problems: list[str]) -> list[str]:
        """Ids of a list (oldest first); members that are no job id are left out, in `problems`."""
        if registry == "queued":
            return self.store.queue_ids(queue, start, start + count - 1, problems)
        low = min_scores(time.time())[registry]  # (expired entries are not shown)
        return self.store.registry_ids(registry, queue, low, start, start + count - 1, problems)

    def _row(self, job_id: str, job: Job | TaskitError, now: float) -> dict[str, Any]:
        if not isinstance(job, Job):  # a corrupt record, or a key of another type
            return {"id": job_id, "task": "?", "call": str(job), "status": "corrupt", "time": "", "error": ""}
        status = job.get_status(refresh=False)
        moment = job.ended_at or job.started_at or job.enqueued_at
        return {
            "id": job.id, "task": job.func_name, "call": call_text(job, 120), "status": str(status),
            "time": when(moment, now), "error": last_error_line(job._exc_info) if status == JobStatus.FAILED else "",
        }

    def search(self, request: Request) -> Response:
        job_id = request.query_params.get("id", "").strip()
        if not job_id:
            return RedirectResponse(_root(request) + "/", 303)
        try:
            validate_id(job_id)
            Job.fetch(job_id, self.connection)
        except SerializationError:
            pass  # corrupt, but there: its page says so
        except (InvalidJobIdError, NoSuchJobError) as exc:
            return self.not_found(request, str(exc))
        return RedirectResponse(f"{_root(request)}/jobs/{urllib.parse.quote(job_id, safe='')}", 303)

    def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job, raw = read_job(validate_id(job_id), self.connection)
        except (InvalidJobIdError, NoSuchJobError) as exc:
            return self.not_found(request, str(exc))
        if isinstance(job, SerializationError):  # what can be read of it is shown, and why not all
            return self.render(request, "message.html", title=f"Job {job_id}", message=str(job), fields=raw)
        shown = details(job)
        status = job.get_status(refresh=False)
        return self.render(request, "job.html", title=f"Job {job_id}", job=shown,
                           can_requeue=status in (JobStatus.FAILED, JobStatus.CANCELED),
                           can_cancel=status in (JobStatus.QUEUED, JobStatus.SCHEDULED))

    def workers(self, request: Request) -> Response:
        problems: list[str] = []
        workers = read_workers(self.store, 10, problems)
        return self.render(request, "workers.html", problems=problems, title="Workers", workers=workers)

    def periodic(self, request: Request) -> Response:
        entries = sorted(periodic.registered().values(), key=lambda e: e.name)
        ticks = self.store.last_ticks([(e.name, e.queue) for e in entries])
        now = time.time()
        rows = [
            {
                "name": e.name, "task": e.func_name, "schedule": repr(e.schedule), "queue": e.queue,
                "last": "never" if tick is None else when(_utc(tick), now), "next": when(e.next_run(now), now),
            }
            for e, tick in zip(entries, ticks)
        ]
        return self.render(request, "periodic.html", title="Periodic tasks", rows=rows)

    def metrics(self, request: Request) -> Response:
        from .. import metrics

        return Response(metrics.generate_latest(self.connection), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- actions -----------------------------------------------------------------------

    async def _act(
        self, request: Request, action: Callable[[dict[str, str]], tuple[str, str]], fallback: str
    ) -> Response:
        """Run a change (in the thread pool) after the read-only and CSRF checks; redirect
        to the page it names with a one-line message."""
        if self.read_only:
            return PlainTextResponse("this dashboard is read-only: changes are turned off", 403)
        refusal = post_refusal(request)
        if refusal is not None:
            return refusal
        form = await read_form(request)
        if form is None:
            return PlainTextResponse(FORM_TOO_BIG, 413)
        if not csrf_ok(request, form.get(CSRF_FIELD)):
            return PlainTextResponse(CSRF_REFUSED, 403)
        try:
            message, target = await run_in_threadpool(action, form)
        except TaskitError as exc:
            message, target = f"Not done: {exc}", fallback
        response = RedirectResponse(_root(request) + target, 303)
        response.set_cookie(FLASH_COOKIE, self.flash.pack(message), httponly=True, samesite="strict",
                            path=_root(request) + "/")
        return response

    async def empty_queue(self, request: Request) -> Response:
        name = request.path_params["name"]

        def run(form: dict[str, str]) -> tuple[str, str]:
            removed = Queue(name, self.connection).empty()
            return f"Removed {removed} waiting job(s) from queue {name}.", _queue_path(name)

        return await self._act(request, run, "/")

    async def requeue_failed(self, request: Request) -> Response:
        name = request.path_params["name"]

        def run(form: dict[str, str]) -> tuple[str, str]:
            done = FailedJobRegistry(name, self.connection).requeue_all()
            return f"Requeued {len(done)} failed job(s) of queue {name}.", _queue_path(name, "failed")

        return await self._act(request, run, "/")

    async def job_action(self, request: Request) -> Response:
        job_id, action = request.path_params["job_id"], request.path_params["action"]
        job_path = f"/jobs/{urllib.parse.quote(job_id, safe='')}"

        def run(form: dict[str, str]) -> tuple[str, str]:
            job = Job.fetch(validate_id(job_id), self.connection)
            back = form.get("back")
            target = _queue_path(job.origin, back) if back in STATES else job_path
            status = job.get_status(refresh=False)
            if action == "requeue":
                registries = {JobStatus.FAILED: FailedJobRegistry, JobStatus.CANCELED: CanceledJobRegistry}
                if status not in registries:
                    raise InvalidOperationError(f"job {job_id} is {status}; only failed or canceled jobs can be requeued")
                registries[status](job.origin, self.connection).requeue(job_id)
                return f"Requeued job {job_id}.", target
            if action == "cancel":
                job.cancel()
                return f"Canceled job {job_id}.", target
            if action == "delete":
                job.delete()
                return f"Deleted job {job_id}.", _queue_path(job.origin, back if back in STATES else "queued")
            raise NoSuchJobError(f"no action {action!r}")

        return await self._act(request, run, job_path)


def _page_number(request: Request) -> int:
    """?page=N, from 1 to MAX_PAGE (1 when it is not a number)."""
    try:
        return min(max(1, int(request.query_params.get("page", "1"))), MAX_PAGE)
    except ValueError:
        return 1


def _charts(what: str, day: list[tuple[int, int, int]]) -> list[Any]:
    """The last hour and the last day of a day's (minute, finished, failed) rows."""
    return [chart(f"{what}, last hour, per minute", day[-60:]), chart(f"{what}, last day, per minute", day)]


def _queue_path(name: str, registry: str = "queued") -> str:
    return f"/queues/{urllib.parse.quote(name, safe='')}?registry={registry}"


def _utc(stamp: float) -> Any:
    """A Unix time as a UTC datetime; None for one no datetime holds (a last tick someone
    set to 'inf' or 1e20 must not make the whole page fail)."""
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(stamp, tz=dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
