"""Runs the snippets of one documentation page, in order, as tests/test_docs.py planned them.

    python tests/docs_runner.py PLAN.json

Run in a fresh process per page, in the page's work directory (where its module blocks were
written), so that the page's python blocks share one `__main__` namespace exactly as if they
were one script, and nothing a page registers (tasks, periodic tasks) leaks into another.
Prints one line per step; exits non-zero at the first failure, with its traceback (whose
file and line numbers are the page's own).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import Any

COMMAND_TIMEOUT = 60


def main(plan_path: str) -> int:
    plan: dict[str, Any] = json.loads(Path(plan_path).read_text())
    workdir = Path(plan["workdir"])
    sys.path[0] = str(workdir)  # as `python script.py` from the page's directory
    script = types.ModuleType("__main__")
    script.__file__ = plan["page"]
    sys.modules["__main__"] = script
    for step in plan["steps"]:
        where = f"{plan['page']}:{step['line']}"
        if step["kind"] == "python":
            worker = start_worker(plan, workdir) if step["worker"] else None
            try:
                code = compile("\n" * (step["line"] - 1) + step["source"], plan["page"], "exec")
                exec(code, script.__dict__)  # noqa: S102 - running the docs' code is the point
            except BaseException:  # noqa: BLE001 - a snippet's SystemExit fails its page too
                print(f"FAILED: the python block at {where}:", flush=True)
                traceback.print_exc()
                return 1
            finally:
                if worker is not None:
                    stop_worker(worker, workdir)
            print(f"ran the python block at {where}" + (" (with a taskit worker running)" if worker else ""))
        else:
            if not run_command(step["command"], workdir, where):
                return 1
    return 0


def taskit(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskit", *args]


def start_worker(plan: dict[str, Any], workdir: Path) -> subprocess.Popen[bytes]:
    """`taskit worker MODULES` in the background, as a page tells its reader to run one."""
    with open(workdir / "worker.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(taskit("worker", *plan["modules"]), cwd=workdir, stdout=log, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen[bytes], workdir: Path) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    print((workdir / "worker.log").read_text(), end="")


#: seconds a command that runs until stopped (a server, `info -i`) is left running
SERVE_SECONDS = 3.0


def runs_until_stopped(args: list[str]) -> bool:
    """The dashboard, the metrics server and a refreshing `info` run until Ctrl-C."""
    return args[0] in ("dashboard", "metrics") or (args[0] == "info" and {"-i", "--interval"} & set(args) != set())


def run_until_stopped(args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run a command that serves until stopped (on a free port, so that parallel runs do not
    collide), give it SERVE_SECONDS, then Ctrl-C: it must stop cleanly, with status 0."""
    if args[0] in ("dashboard", "metrics") and not {"-p", "--port"} & set(args):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args += ["--port", str(s.getsockname()[1])]
    process = subprocess.Popen(taskit(*args), cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=SERVE_SECONDS)  # an early exit is an answer too
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=COMMAND_TIMEOUT)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_command(line: str, workdir: Path, where: str) -> bool:
    """One `taskit ...` line of a shell block; a worker that would run forever gets --burst,
    a command that serves until stopped is stopped after a moment (run_until_stopped)."""
    args = shlex.split(line, comments=True)[1:]
    if args[0] == "worker" and not {"-b", "--burst", "--max-jobs"} & set(args):
        args.append("--burst")
    if runs_until_stopped(args):
        done = run_until_stopped(args, workdir)
    else:
        done = subprocess.run(taskit(*args), check=False, cwd=workdir, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    output = done.stdout + done.stderr
    # `requeue` or `cancel` of ids of your own: exit 1 naming each id it could not requeue or
    # cancel is its documented answer
    refused = {"requeue": "not requeued: ", "cancel": "not canceled: "}.get(args[0])
    named_ids_only = refused is not None and done.returncode == 1 and all(
        line.startswith(refused) for line in done.stderr.splitlines()
    )
    if done.returncode != 0 and not named_ids_only:
        print(f"FAILED: `{line}` at {where} exited {done.returncode}:\n{output}", flush=True)
        return False
    print(f"ran `taskit {shlex.join(args)}` at {where}:\n{output}", end="", flush=True)
    return True


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1]))
