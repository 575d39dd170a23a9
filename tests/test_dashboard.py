"""The dashboard in a real browser (issue 14): Debian's chromium driven by Playwright.

The dashboard runs as a real `taskit dashboard` process on a free port and a real
`taskit worker` runs what the browser requeues. Never `playwright install`: the browser
is /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it).
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashboard_tasks
import pytest
import records
import redis
from conftest import free_port, taskit_command
from records import set_fields

from taskit import Job, JobStatus, Queue, Worker
from taskit.storage import keys

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' brings playwright")


class Dashboard:
    """A `taskit dashboard` subprocess on a free port."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                taskit_command("dashboard", "dashboard_tasks", "--port", str(self.port), *args),
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start: {log.read_text()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/static/style.css", timeout=2)
        except urllib.error.HTTPError:
            return True  # it answers, with 401
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        assert "Traceback" not in self.log.read_text(), self.log.read_text()


@pytest.fixture
def dashboards(cli_env: dict[str, str], tmp_path: Path) -> Iterator:
    started: list[Dashboard] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Dashboard:
        board = Dashboard({**cli_env, **(env or {})}, tmp_path / f"dashboard-{len(started)}.log", *args)
        started.append(board)
        return board

    yield start
    for board in started:
        board.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def worker(cli_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    with open(tmp_path / "worker.log", "wb") as out:
        process = subprocess.Popen(taskit_command("worker", "dashboard_tasks", "--log-level", "warning"),
                                   env=cli_env, stdout=out, stderr=subprocess.STDOUT)
    yield process
    process.terminate()
    process.wait(timeout=30)


def failed_job(connection: redis.Redis, order: str = "A-17") -> Job:
    queue = Queue(connection=connection)
    job = queue.enqueue(dashboard_tasks.fails_until_fixed, order)
    Worker([queue], modules=("dashboard_tasks",)).work(burst=True)
    assert job.get_status() == JobStatus.FAILED
    return job


def test_find_a_failed_job_requeue_it_and_see_it_run(connection, dashboards, page, worker) -> None:
    job = failed_job(connection)
    board = dashboards()
    page.goto(board.url + "/")
    row = page.locator("tr", has=page.locator("a", has_text="default")).first
    assert row.locator("a.count.failed").inner_text() == "1"
    row.locator("a.count.failed").click()  # the queue's failed jobs
    assert "registry=failed" in page.url
    assert page.locator("td.call .error").inner_text() == "RuntimeError: order A-17 cannot ship yet"
    page.click(f"a:has-text('{job.id}')")
    assert page.url.endswith(f"/jobs/{job.id}")
    assert "cannot ship yet" in page.locator("pre.traceback").inner_text()
    assert page.locator(".status").first.inner_text() == "failed"

    connection.set(dashboard_tasks.FIXED_KEY, 1)  # the bug is fixed: a requeue will succeed
    page.click("button:has-text('Requeue')")
    assert page.locator(".flash").inner_text() == f"Requeued job {job.id}."
    deadline = time.monotonic() + 30
    while page.locator(".status").first.inner_text() != "finished":
        assert time.monotonic() < deadline, "the worker did not run the requeued job"
        time.sleep(0.2)
        page.reload()
    assert page.locator("pre.result").inner_text() == "'shipped A-17'"


def test_the_search_box_finds_a_job_by_id(connection, dashboards, page) -> None:
    job = failed_job(connection)
    board = dashboards()
    page.goto(board.url + "/workers")
    page.fill("input[name=id]", job.id)
    page.press("input[name=id]", "Enter")
    assert page.url.endswith(f"/jobs/{job.id}")
    page.fill("input[name=id]", "no-such-job")
    page.press("input[name=id]", "Enter")
    assert "no job 'no-such-job'" in page.locator(".message").inner_text()


def test_job_data_is_shown_as_text_never_run(connection, dashboards, page) -> None:
    attack = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    job = Queue(connection=connection).enqueue(dashboard_tasks.echo, attack, meta={"note": attack},
                                               description=attack)
    board = dashboards()
    for path in (f"/jobs/{job.id}", "/queues/default"):
        page.goto(board.url + path)
        assert page.evaluate("window.pwned") is None
        assert page.locator("script").count() == 1  # only the dashboard's own
        assert page.locator("img").count() == 0
    page.goto(board.url + f"/jobs/{job.id}")
    assert attack in page.locator("ol.values").inner_text()
    assert attack in page.locator("dd.mono").first.inner_text()


def test_a_post_without_the_right_csrf_token_is_refused(connection, dashboards, page) -> None:
    job = failed_job(connection)
    board = dashboards()
    page.goto(board.url + f"/jobs/{job.id}")
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    url = board.url + f"/jobs/{job.id}/requeue"
    missing = page.request.post(url, form={}, max_redirects=0)
    wrong = page.request.post(url, form={"csrf": "x" * 43}, max_redirects=0)
    assert (missing.status, wrong.status) == (403, 403)
    assert "CSRF" in missing.text()
    assert job.get_status() == JobStatus.FAILED
    # another site's page: its browser has no cookie of ours to match
    other = page.context.browser.new_context()
    forged = other.request.post(url, form={"csrf": token}, max_redirects=0)
    assert forged.status == 403
    other.close()
    assert job.get_status() == JobStatus.FAILED
    good = page.request.post(url, form={"csrf": token}, max_redirects=0)
    assert good.status == 303
    assert job.get_status() == JobStatus.QUEUED


def test_read_only_mode_shows_no_action_and_refuses_them(connection, dashboards, page) -> None:
    job = failed_job(connection)
    board = dashboards("--read-only")
    page.goto(board.url + f"/jobs/{job.id}")
    assert page.locator(".badge.readonly").inner_text() == "read-only"
    assert page.locator("button:has-text('Requeue')").count() == 0
    assert "cannot ship yet" in page.locator("pre.traceback").inner_text()
    page.goto(board.url + "/queues/default?registry=failed")
    assert page.locator("form[method=post]").count() == 0
    refused = page.request.post(board.url + f"/jobs/{job.id}/requeue", form={"csrf": "x"}, max_redirects=0)
    assert refused.status == 403 and "read-only" in refused.text()
    assert job.get_status() == JobStatus.FAILED


def test_basic_auth_and_bearer_token(connection, dashboards, browser) -> None:
    failed_job(connection)
    board = dashboards("--username", "ops", env={"TASKIT_DASHBOARD_PASSWORD": "s3cret", "TASKIT_DASHBOARD_TOKEN": "t0ken"})
    anonymous = browser.new_context()
    refused = anonymous.request.get(board.url + "/")
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert anonymous.request.get(board.url + "/metrics").status == 401
    wrong = browser.new_context(http_credentials={"username": "ops", "password": "nope"})
    assert wrong.request.get(board.url + "/").status == 401
    assert anonymous.request.get(board.url + "/", headers={"Authorization": _basic("ops", "nope")}).status == 401
    assert anonymous.request.get(board.url + "/", headers={"Authorization": _basic("any", "t0ken")}).status == 200
    allowed = browser.new_context(http_credentials={"username": "ops", "password": "s3cret"})
    page = allowed.new_page()
    assert page.goto(board.url + "/").status == 200
    assert page.locator("h1").inner_text() == "Overview"
    bearer = anonymous.request.get(board.url + "/metrics", headers={"Authorization": "Bearer t0ken"})
    assert bearer.status == 200 and "taskit_queue_jobs" in bearer.text()
    for context in (anonymous, wrong, allowed):
        context.close()
    assert "s3cret" not in board.log.read_text() and "t0ken" not in board.log.read_text()


def test_workers_and_periodic_pages(connection, dashboards, page, worker) -> None:
    board = dashboards()
    deadline = time.monotonic() + 30
    page.goto(board.url + "/workers")
    while page.locator("td.mono").count() == 0:
        assert time.monotonic() < deadline, "the worker did not register"
        time.sleep(0.2)
        page.reload()
    row = page.locator("tbody tr").first
    assert str(worker.pid) in row.inner_text() and "left" in row.inner_text()
    page.goto(board.url + "/periodic")
    row = page.locator("tbody tr", has_text="nightly_cleanup")
    assert "Cron('*/5 * * * *')" in row.inner_text() and "UTC" in row.inner_text()


def test_only_local_host_names_are_served_without_auth(connection, dashboards) -> None:
    board = dashboards()
    request = urllib.request.Request(board.url + "/", headers={"Host": "attacker.example:80"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 421


def test_refuses_a_public_address_without_auth(cli_env: dict[str, str]) -> None:
    proc = subprocess.run(taskit_command("dashboard", "--host", "0.0.0.0"), env=cli_env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "refusing to serve the dashboard on 0.0.0.0 without auth" in proc.stderr


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_mounted_inside_another_asgi_app(connection) -> None:
    """As docs/dashboard.md shows: links, static files, cookies and redirects stay under the mount."""
    import re

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    job = failed_job(connection)
    app = Starlette(routes=[Mount("/ops/taskit", app=create_app(connection))])
    client = TestClient(app, base_url="http://localhost")
    page = client.get(f"/ops/taskit/jobs/{job.id}")
    assert page.status_code == 200 and 'href="/ops/taskit/static/style.css"' in page.text
    assert client.get("/ops/taskit/static/style.css").status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = client.post(f"/ops/taskit/jobs/{job.id}/requeue", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/ops/taskit/jobs/{job.id}"
    assert job.get_status() == JobStatus.QUEUED
    assert "Requeued job" in client.get(done.headers["location"]).text


def _client(connection) -> Any:
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    return TestClient(create_app(connection), base_url="http://localhost")


def test_a_page_number_past_what_redis_can_index_shows_the_last_page_not_an_error(connection) -> None:
    for i in range(3):
        failed_job(connection, f"order-{i}")
    client = _client(connection)
    for registry in ("queued", "failed"):
        page = client.get(f"/queues/default?registry={registry}&page={10**30}")
        assert page.status_code == 200 and "page 1000000000" in page.text


def test_a_key_of_the_wrong_type_or_a_redis_down_is_said_on_the_page_in_one_line(connection, caplog) -> None:
    """Not a bare 'Internal Server Error' with a traceback in the log: the reason, named. (A
    page that lists things shows the rest and names the key: test_corrupt_keys.py; a job's
    own page cannot.)"""
    tag = keys.queue_tag("default")
    connection.set(keys.directory("overwritten"), tag)
    overwritten = keys.job(tag, "overwritten")
    connection.set(overwritten, "not a hash")
    client = _client(connection)
    page = client.get("/jobs/overwritten")
    assert page.status_code == 500 and "Cannot show this page" in page.text
    assert f"{overwritten}: WRONGTYPE" in page.text
    assert all(record.exc_info is None for record in caplog.records)
    assert any("GET /jobs/overwritten: " in record.getMessage() and "WRONGTYPE" in record.getMessage()
               for record in caplog.records)

    gone = _client(redis.Redis(port=free_port(), password="s3cret-pw"))
    for path in ("/", "/jobs/some-job"):  # a job that cannot be read is not a job that does not exist
        page = gone.get(path)
        assert page.status_code == 503 and "cannot reach Redis at redis://***@" in page.text, path
        assert "s3cret-pw" not in page.text


@pytest.mark.parametrize("tick", ["inf", "nan", "1e20"])
def test_a_last_tick_no_datetime_holds_leaves_the_periodic_page_readable(connection, tick) -> None:

    from records import periodic_key

    connection.set(periodic_key("dashboard_tasks.nightly_cleanup"), tick)
    page = _client(connection).get("/periodic")
    assert page.status_code == 200 and "nightly_cleanup" in page.text


def test_a_scheduled_time_no_datetime_holds_leaves_the_job_page_readable(connection) -> None:
    job = Queue(connection=connection).enqueue_in(60, dashboard_tasks.echo, 1)
    connection.zadd(keys.of_queue("default").scheduled, {job.id: 1e300})
    page = _client(connection).get(f"/jobs/{job.id}")
    assert page.status_code == 200 and "scheduled" in page.text


def test_a_page_on_another_port_cannot_plant_the_csrf_cookie_and_post(connection, dashboards, page) -> None:
    """Cookies are shared by every port of a host (and can be set by a sibling subdomain): a
    page there sets our cookie to a value it knows and posts that value. The browser says
    where the POST comes from (Sec-Fetch-Site), and only our own origin may change things."""
    queue = Queue("victim", connection=connection)
    for i in range(3):
        queue.enqueue(dashboard_tasks.echo, i)
    board = dashboards()
    token = "A" * 43
    attacker = f"http://127.0.0.1:{free_port()}/"
    html = f"""<form id="f" method="post" action="{board.url}/queues/victim/empty">
    <input name="csrf" value="{token}"></form>
    <script>document.cookie = "taskit_csrf={token}; path=/"; document.getElementById("f").submit();</script>"""
    page.route(attacker, lambda route: route.fulfill(body=html, content_type="text/html"))
    with page.expect_response(f"{board.url}/queues/victim/empty") as posted:
        page.goto(attacker)
    assert posted.value.status == 403
    assert queue.count == 3
    page.goto(board.url + "/queues/victim")  # our own page, with the planted cookie: still works
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Empty queue')")
    assert page.locator(".flash").inner_text() == "Removed 3 waiting job(s) from queue victim."


@pytest.mark.parametrize("host", ["localhost:9181", "127.0.0.1", "127.0.0.2:80", "[::1]:9181", "[::1]"])
def test_without_auth_every_loopback_address_is_served(connection, host) -> None:
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    client = TestClient(create_app(connection, local_only=True))
    assert client.get("/", headers={"Host": host}).status_code == 200
    for other in ("attacker.example", "127.0.0.1.attacker.example:80", "[::2]:9181", ""):
        assert client.get("/", headers={"Host": other}).status_code == 421


def test_a_lease_or_enqueue_time_of_inf_leaves_the_pages_readable(connection, cli_env) -> None:
    from test_cli import ok, taskit

    from taskit.storage import keys

    connection.zadd(keys.WORKERS, {"w-inf": float("inf")})
    connection.hset(keys.worker("w-inf"), mapping={"host": "h", "pid": "1", "queues": "default", "lease": "inf"})
    job = Queue(connection=connection).enqueue(dashboard_tasks.echo, 1, ttl=600)  # (a hash of its own)
    set_fields(connection, job.id, {"e": "-inf"})
    client = _client(connection)
    for path in ("/", "/workers"):
        assert client.get(path).status_code == 200, path
    ok(taskit(cli_env, "info"))


def test_a_port_in_use_is_said_in_one_line_before_anything_is_announced(cli_env) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(taskit_command("dashboard", "--port", str(port)), env=cli_env, capture_output=True,
                              text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_redirects_are_relative_whatever_the_host_header_says(connection, dashboards, page) -> None:
    """Starlette builds the redirect that drops a trailing slash from the Host header, which the
    client chooses: with auth on (no local-host check), 'Host: evil.com' made it
    'Location: http://evil.com/workers'."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from taskit.dashboard import create_app

    evil = {"Host": "evil.com", "Authorization": "Bearer t0ken"}
    client = TestClient(create_app(connection, token="t0ken"), base_url="http://localhost")
    for path, target in (("/workers/", "/workers"), ("/queues/emails/", "/queues/emails"), ("/jobs?id=", "/")):
        answer = client.get(path, headers=evil, follow_redirects=False)
        assert answer.is_redirect and answer.headers["location"] == target, path
    mounted = TestClient(Starlette(routes=[Mount("/ops/taskit", app=create_app(connection, token="t0ken"))]))
    answer = mounted.get("/ops/taskit/workers/", headers=evil, follow_redirects=False)
    assert answer.headers["location"] == "/ops/taskit/workers"
    from taskit.dashboard.security import relative

    assert relative(b"http://evil.com//evil.com/x?a=1#f") == b"/evil.com/x?a=1#f"  # never '//host': another site
    assert relative(b"/jobs/a?registry=failed") == b"/jobs/a?registry=failed"

    board = dashboards()  # and in a browser, the redirect lands on the page
    page.goto(board.url + "/workers/")
    assert page.url == board.url + "/workers" and page.locator("h1").inner_text() == "Workers"


def _answer_to_head(board: Any, path: str, headers: dict[str, str], body: bytes = b"") -> str:
    """Send a POST's head (and `body`, maybe not all a Content-Length promises) over a raw
    socket; the status line of the answer, which must come without the rest of the body."""
    import socket

    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection(("127.0.0.1", board.port), timeout=20) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{board.port}\r\n{head}\r\n".encode() + body)
        try:
            return raw.makefile("rb").readline().decode().strip()
        except TimeoutError:
            return "no answer: the server waits for the rest of the body"


def test_a_post_is_refused_before_its_body_is_read_when_its_head_says_enough(connection, dashboards) -> None:
    """A cross-site multipart upload was spooled to disk (request.form()) before the origin check
    refused it. Each POST here promises 100 MB and sends none of it: the answer must come anyway."""
    queue = Queue("victim", connection=connection)
    queue.enqueue(dashboard_tasks.echo, 1)
    board = dashboards()
    cookie = {"Cookie": "taskit_csrf=" + "A" * 43}
    upload = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(100 << 20)}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = [
        ({"Sec-Fetch-Site": "cross-site", **cookie, **upload}, "403"),   # another site's page
        ({"Sec-Fetch-Site": "same-site", **upload}, "403"),              # a sibling subdomain
        ({"Sec-Fetch-Site": "same-origin", **upload}, "403"),            # no CSRF cookie
        ({"Sec-Fetch-Site": "same-origin", **cookie, **upload}, "415"),  # not the form our pages post
        ({"Sec-Fetch-Site": "same-origin", **cookie, **form, "Content-Length": str(100 << 20)}, "413"),
    ]
    for headers, status in cases:
        line = _answer_to_head(board, "/queues/victim/empty", headers)
        assert line.startswith(f"HTTP/1.1 {status} "), (headers, line)
    # a chunked body declares no length: it is read up to the bound, then refused
    chunk = b"a=" + b"x" * 8000
    chunked = _answer_to_head(board, "/queues/victim/empty", {**cookie, **form, "Transfer-Encoding": "chunked"},
                              f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    assert chunked.startswith("HTTP/1.1 413 "), chunked
    assert queue.count == 1


def test_a_page_on_another_port_cannot_plant_a_flash_message(connection, dashboards, page) -> None:
    """Cookies are not kept apart by port: a page at 127.0.0.1:<other port> set the flash cookie
    to any text, which the dashboard then showed as its own message."""
    job = failed_job(connection)
    board = dashboards()
    attacker = f"http://127.0.0.1:{free_port()}/"
    lure = base64.urlsafe_b64encode(b"Session expired: log in again at https://evil.example").decode()
    html = f"""<script>document.cookie = "taskit_flash={lure}; path=/";
    location = "{board.url}/";</script>"""
    page.route(attacker, lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(attacker)
    page.wait_for_url(board.url + "/")
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator(".flash").count() == 0
    page.goto(board.url + f"/jobs/{job.id}")  # a message the dashboard signed is still shown
    page.click("button:has-text('Requeue')")
    assert page.locator(".flash").inner_text() == f"Requeued job {job.id}."
    page.reload()  # once
    assert page.locator(".flash").count() == 0


def test_a_flash_value_that_was_changed_or_is_old_is_not_shown() -> None:
    from taskit.dashboard.security import Flash

    flash = Flash()
    value = flash.pack("Requeued job a.", now=1000)
    assert flash.unpack(value, now=1001) == "Requeued job a."
    body, mac = value.split(".")
    forged = base64.urlsafe_b64encode(b"1000:Requeued job b.").decode().rstrip("=")
    assert flash.unpack(f"{forged}.{mac}", now=1001) == ""
    assert flash.unpack(value, now=1000 + Flash.SECONDS + 1) == ""
    assert Flash().unpack(value, now=1001) == ""  # another app's key
    for junk in ("", ".", "x.y", "%%%.%%%", body):
        assert flash.unpack(junk, now=1001) == ""


def test_the_overview_shows_a_page_of_queues_and_finds_one_by_name(connection, dashboards, page) -> None:
    """With thousands of queues, one load read them all (and 25 hashes each for the day chart):
    the overview now shows 50 a page, by name, with a filter."""
    for i in range(60):
        Queue(f"tenant-{i:03d}", connection=connection).enqueue(dashboard_tasks.echo, i)
    board = dashboards()
    page.goto(board.url + "/")
    names = page.locator("table.queues tbody tr td:first-child a")
    assert names.count() == 50 and names.first.inner_text() == "tenant-000"
    page.click("a:has-text('next page')")
    assert [names.nth(i).inner_text() for i in range(names.count())] == [f"tenant-{i:03d}" for i in range(50, 60)]
    page.fill("input[name=match]", "nt-04")
    page.press("input[name=match]", "Enter")
    assert names.count() == 10 and "10 of 60 queue(s)" in page.locator(".note").first.inner_text()
    names.first.click()
    assert page.locator("h1").inner_text() == "Queue tenant-040"
    assert "Queue tenant-040, last day, per minute" in page.locator(".charts").inner_text()


# -- the queue page's actions and filter -----------------------------------------------------


def _row(page, job_id: str) -> Any:
    """The table row of the job `job_id` on a queue page."""
    return page.locator("table.jobs tbody tr", has=page.locator(f"td.id a:text-is('{job_id}')"))


def _shown_ids(page) -> list[str]:
    return page.locator("table.jobs td.id a").all_inner_texts()


def test_the_queue_page_cancels_and_deletes_a_job(connection, dashboards, page) -> None:
    """Cancel takes a waiting job off its queue into the canceled registry; Delete removes a
    job once the browser's confirm is accepted (and nothing when it is dismissed)."""
    from taskit import NoSuchJobError

    queue = Queue("orders", connection=connection)
    first, second, third = (queue.enqueue(dashboard_tasks.echo, i) for i in range(3))
    later = queue.enqueue_in(3600, dashboard_tasks.echo, "later")
    board = dashboards()
    page.goto(board.url + "/queues/orders")
    assert _shown_ids(page) == [first.id, second.id, third.id]

    _row(page, first.id).locator("button:has-text('Cancel')").click()
    assert page.locator(".flash").inner_text() == f"Canceled job {first.id}."
    assert "registry=queued" in page.url and _shown_ids(page) == [second.id, third.id]
    assert first.get_status() == JobStatus.CANCELED and queue.job_ids == [second.id, third.id]
    assert first.id in queue.canceled_job_registry

    page.once("dialog", lambda dialog: dialog.dismiss())  # "Delete job ...?" answered no
    _row(page, second.id).locator("button:has-text('Delete')").click()
    page.wait_for_timeout(500)  # (a form sent anyway would have loaded a page by now)
    assert page.locator(".flash").inner_text() == f"Canceled job {first.id}."  # still the last page's
    assert second.get_status() == JobStatus.QUEUED
    page.once("dialog", lambda dialog: dialog.accept())
    _row(page, second.id).locator("button:has-text('Delete')").click()
    assert page.locator(".flash").inner_text() == f"Deleted job {second.id}."
    assert _shown_ids(page) == [third.id] and queue.job_ids == [third.id]
    with pytest.raises(NoSuchJobError):
        Job.fetch(second.id, connection)

    page.goto(board.url + "/queues/orders?registry=scheduled")  # a scheduled job is canceled too
    _row(page, later.id).locator("button:has-text('Cancel')").click()
    assert page.locator(".flash").inner_text() == f"Canceled job {later.id}."
    assert "registry=scheduled" in page.url and _shown_ids(page) == []
    assert later.get_status() == JobStatus.CANCELED and len(queue.scheduled_job_registry) == 0
    assert third.get_status() == JobStatus.QUEUED  # untouched


def test_the_queue_page_requeues_every_failed_job_and_the_worker_runs_them(connection, dashboards, page, worker) -> None:
    jobs = [failed_job(connection, f"B-{i}") for i in range(3)]
    board = dashboards()
    page.goto(board.url + "/queues/default?registry=failed")
    assert sorted(_shown_ids(page)) == sorted(j.id for j in jobs)
    connection.set(dashboard_tasks.FIXED_KEY, 1)
    page.once("dialog", lambda dialog: dialog.accept())  # "Requeue every failed job of default?"
    page.click("button:has-text('Requeue all failed')")
    assert page.locator(".flash").inner_text() == "Requeued 3 failed job(s) of queue default."
    assert "registry=failed" in page.url
    assert [job.wait(timeout=30) for job in jobs] == [f"shipped B-{i}" for i in range(3)]
    page.reload()
    assert _shown_ids(page) == [] and page.locator("button:has-text('Requeue all failed')").count() == 0
    page.goto(board.url + "/queues/default?registry=finished")
    assert sorted(_shown_ids(page)) == sorted(j.id for j in jobs)


def test_the_queue_page_filters_by_task_name(connection, dashboards, page) -> None:
    queue = Queue("mixed", connection=connection)
    jobs = [queue.enqueue(dashboard_tasks.echo if i % 3 else dashboard_tasks.fails_until_fixed, i) for i in range(9)]
    board = dashboards()
    page.goto(board.url + "/queues/mixed")
    assert len(_shown_ids(page)) == 9
    page.fill("input[name=task]", "dashboard_tasks.fails_until_fixed")
    page.press("input[name=task]", "Enter")
    assert "task=dashboard_tasks.fails_until_fixed" in page.url
    assert _shown_ids(page) == [jobs[i].id for i in (0, 3, 6)]
    assert set(page.locator("table.jobs tbody td:nth-child(2)").all_inner_texts()) == {"dashboard_tasks.fails_until_fixed"}
    assert page.locator(".note", has_text="Filtered among the first 9 jobs").count() == 1
    assert page.locator("input[name=task]").input_value() == "dashboard_tasks.fails_until_fixed"
    page.fill("input[name=task]", "dashboard_tasks.no_such_task")
    page.click("button:has-text('Filter')")
    assert _shown_ids(page) == []
    assert "No queued job of task dashboard_tasks.no_such_task." in page.locator("table.jobs").inner_text()
    page.click("a:has-text('clear')")
    assert len(_shown_ids(page)) == 9 and page.locator("input[name=task]").input_value() == ""


def test_the_workers_page_shows_every_running_job_and_the_backlog(connection, cli_env, dashboards, page, tmp_path) -> None:
    """--threads 4: four jobs 'running for ...', and those claimed ahead 'waiting in the
    worker's backlog', though Redis has every one of them as started."""
    from test_cli_tools import Backlogged

    worker = Backlogged(connection, cli_env, tmp_path / "gate")
    try:
        board = dashboards()
        page.goto(board.url + "/workers")
        cell = page.locator("tbody tr", has_text=worker.name).locator("td").last
        lines = cell.locator("div").all_inner_texts()
        shown = dict(line.split(" ", 1) for line in lines if not line.startswith("+"))
        assert list(shown) == worker.held[:10]
        for job_id, text in shown.items():
            if job_id in worker.running:
                assert re.fullmatch(r"concurrency_tasks\.gated\s+running for \S+", text), text
            else:
                assert re.fullmatch(r"concurrency_tasks\.gated\s+waiting in the worker's backlog \(claimed, not started\)", text), text
        assert sum("running for" in text for text in shown.values()) == Backlogged.THREADS
        assert sum("waiting" in text for text in shown.values()) == len(worker.waiting)
    finally:
        worker.stop(tmp_path / "gate")


def _sent_by_redis(connection) -> int:
    return connection.info("stats")["total_net_output_bytes"]


def test_a_job_with_a_big_argument_result_or_meta_is_shown_without_reading_them(connection, cli_env) -> None:
    """Values over jobview.SHOWN_BYTES are not read (HSTRLEN first: lua/peek.lua): each page or
    command that shows such a job reads a few KB of Redis, not the 5 MB values."""
    from test_cli import ok, taskit


    big = "x" * 5_000_000
    queue = Queue(connection=connection)
    done = queue.enqueue(dashboard_tasks.echo, big)  # its result is as big as its argument
    Worker([queue], modules=("dashboard_tasks",)).work(burst=True)
    waiting = queue.enqueue(dashboard_tasks.echo, big)
    waiting.meta["blob"] = big
    waiting.save_meta()
    client = _client(connection)
    for path, shown in [(f"/jobs/{done.id}", "dashboard_tasks.echo"), (f"/jobs/{waiting.id}", "queued"),
                        ("/queues/default?registry=queued", waiting.id), ("/queues/default?registry=finished", done.id),
                        ("/queues/default?registry=queued&task=dashboard_tasks.echo", waiting.id)]:
        before = _sent_by_redis(connection)
        page = client.get(path)
        assert page.status_code == 200 and shown in page.text and "&lt;5.0 MB, not shown&gt;" in page.text, path
        assert _sent_by_redis(connection) - before < 200_000, path
    before = _sent_by_redis(connection)
    out = ok(taskit(cli_env, "job", waiting.id)).stdout
    assert "args         <5.0 MB, not shown>" in out and "meta         (meta)=<5.0 MB, not shown>" in out, out
    assert _sent_by_redis(connection) - before < 200_000
    assert "result       <5.0 MB, not shown>" in ok(taskit(cli_env, "job", done.id)).stdout
    assert Job.fetch(done.id).result == big  # (the API reads the whole record, as before)
    # a big job waits packed, as any other (a claim reads its record): Redis unpacks it to show it
    assert connection.hstrlen(records.bucket(connection, waiting.id), waiting.id) > 5_000_000


def test_a_big_packed_entry_is_named_with_its_size_and_not_read(connection) -> None:
    """A record written by hand with a 3 MB value shows without it; one that is not msgpack
    and too long to read is named with its size. Neither is sent."""
    import msgpack

    job = Queue(connection=connection).enqueue(dashboard_tasks.echo, 1)
    records.corrupt_record(connection, job.id, msgpack.packb(["f", "dashboard_tasks.echo", "a", "x" * 3_000_000], use_bin_type=False))
    client = _client(connection)
    before = _sent_by_redis(connection)
    page = client.get(f"/jobs/{job.id}")
    assert page.status_code == 200 and "dashboard_tasks.echo" in page.text and "&lt;3.0 MB, not shown&gt;" in page.text
    assert _sent_by_redis(connection) - before < 200_000
    records.corrupt_record(connection, job.id, b"\xc1" * 3_000_000)
    before = _sent_by_redis(connection)
    page = client.get(f"/jobs/{job.id}")
    assert page.status_code == 200 and "packed entry of 3.0 MB that is not one taskit wrote" in page.text
    assert "&lt;3.0 MB, not shown&gt;" in page.text and _sent_by_redis(connection) - before < 200_000
