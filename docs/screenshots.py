"""Take the screenshots of docs/dashboard.md: `python docs/screenshots.py` (writes docs/images/).

Starts a private redis-server, fills it with the example tasks' jobs (a day of history
recorded by workers whose clock is set back, failures, a scheduled and a canceled job, a
slow jobs that a real worker runs at once), starts `taskit dashboard` and photographs each page
with Debian's chromium (`apt-get install chromium`) driven by Playwright.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import taskit  # noqa: E402
from examples import periodic as periodic_tasks  # noqa: E402,F401 (registers the periodic tasks)
from examples import tasks  # noqa: E402
from taskit import Queue, Worker  # noqa: E402

IMAGES = ROOT / "docs" / "images"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(connection: redis.Redis) -> str:
    """Jobs of every kind; returns the id of a failed job."""
    queue = Queue("examples", connection=connection)
    now = time.time()
    rng = random.Random(14)
    # a day of history, recorded by in-process workers whose clock is set back
    for minutes_ago in [*range(1440, 60, -7), *range(60, 0, -1)]:
        busy = 1 + abs(12 - (minutes_ago // 60) % 24)
        jobs = [queue.prepare_data(tasks.add, (i, i)) for i in range(rng.randint(busy, busy * 3))]
        jobs += [queue.prepare_data(tasks.divide, (1, 0)) for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        queue.enqueue_many(jobs)
        moment = now - minutes_ago * 60
        Worker([queue], connection, clock=lambda moment=moment: moment).work(burst=True)
    failed = queue.enqueue(tasks.divide, 3, 0)
    Worker([queue], connection).work(burst=True)
    queue.enqueue(tasks.count_words, "the quick brown fox")
    queue.enqueue_in(3600, tasks.add, 40, 2)
    queue.enqueue(tasks.add, 1, 1).cancel()
    Queue("emails", connection=connection).enqueue("myapp.emails.send", "ops@example.com", subject="weekly report")
    taskit.periodic.enqueue_due(connection)
    return failed.id


def main() -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    directory = tempfile.mkdtemp(prefix="taskit-shots-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
                              stdout=subprocess.DEVNULL)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        connection = redis.Redis(port=port)
        for _ in range(100):
            try:
                connection.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        taskit.configure(connection=connection)
        failed_id = fill(connection)
        env = {**os.environ, "TASKIT_REDIS_URL": url, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "taskit"]
        processes.append(subprocess.Popen([*command, "worker", "examples.tasks", "-n", "web-1.4242", "--threads", "4",
                                           "--log-level", "error"], env=env, cwd=ROOT))
        for x in (12, 7, 3):  # jobs the worker is running, on three of its four threads
            Queue("examples", connection=connection).enqueue(tasks.slow_square, x, seconds=600)
        dashboard_port = free_port()
        processes.append(subprocess.Popen([*command, "dashboard", "examples.tasks", "examples.periodic", "--port",
                                           str(dashboard_port)], env=env, cwd=ROOT))
        base = f"http://127.0.0.1:{dashboard_port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/static/style.css", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(3)  # the worker picks up the slow jobs
        shoot(base, failed_id)
    finally:
        for process in processes:
            process.kill()  # the worker is in the middle of its slow jobs: no graceful stop
            process.wait(timeout=30)
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def shoot(base: str, failed_id: str) -> None:
    from playwright.sync_api import sync_playwright

    IMAGES.mkdir(parents=True, exist_ok=True)
    pages = {
        "dashboard-overview.png": "/",
        "dashboard-queue.png": "/queues/examples?registry=failed",
        "dashboard-job.png": f"/jobs/{failed_id}",
        "dashboard-workers.png": "/workers",
        "dashboard-periodic.png": "/periodic",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        for name, path in pages.items():
            page.goto(base + path)
            page.screenshot(path=str(IMAGES / name), full_page=False)
            print(f"wrote docs/images/{name}")
        browser.close()


if __name__ == "__main__":
    main()
