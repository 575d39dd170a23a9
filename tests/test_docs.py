"""Every snippet in README.md and docs/*.md runs as written, against the suite's private Redis.

The convention the pages follow (a reader can rely on it too):

* The ```python blocks of one page run in order, in one namespace, as one script would:
  a later block may use what an earlier block of the same page defined, never what
  another page did. Each page runs in a fresh process with `TASKIT_REDIS_URL` set, so a
  snippet must take its Redis from there (taskit's default does; `Redis()` alone means
  localhost:6379 and is refused here).
* A block whose first line is only a path, `# myapp/tasks.py`, is that file: it is written
  into the page's work directory (the current directory of its snippets, with an empty
  `__init__.py` for each package) before any block runs. Two blocks for one path are
  written one after the other into the one file.
* A block that waits for a job (`.wait(`) runs while a real `taskit worker MODULES` (the
  page's module files) runs beside it, as the page tells its reader to run one.
* A block whose first line is `# not run: REASON` is not run (keep them rare).
* In ```sh blocks, each line that starts with `taskit ` is run and must exit 0; a worker
  that would run until stopped is run with `--burst` added; the dashboard, `taskit metrics`
  and `taskit info -i N` are left running three seconds (servers on a free port unless the
  line gives one), then stopped with Ctrl-C; `taskit requeue` or `taskit cancel` of ids of
  your own may exit 1 naming each id it could not requeue or cancel. Other lines
  (installing, the demo) are run by .ci/run. Blocks in other languages, or none, are
  output and text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from conftest import ROOT, RedisServer

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MODULE_FILE = re.compile(r"# (?P<path>[\w/]+\.py)")
NOT_RUN = re.compile(r"# not run: \S")
SHELL = {"sh", "bash", "shell", "console"}
LOCAL_REDIS = re.compile(r"\bRedis\(\s*\)")


@dataclass
class Page:
    path: Path
    steps: list[dict[str, object]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    file_blocks: int = 0
    not_run: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def modules(self) -> list[str]:
        return [path.removesuffix(".py").replace("/", ".") for path in self.files]


def parse(path: Path) -> Page:
    page = Page(path)
    text = path.read_text()
    for block in FENCE.finditer(text):
        line = text.count("\n", 0, block.start("body")) + 1  # the block's first line in the page
        body, lang = block["body"], block["lang"]
        first = body.split("\n", 1)[0].strip()
        where = f"{page.name}:{line}"
        if lang == "python":
            assert not LOCAL_REDIS.search(body), (
                f"{where}: Redis() connects to localhost:6379 whatever TASKIT_REDIS_URL says; "
                'use Redis.from_url(os.environ.get("TASKIT_REDIS_URL", "redis://localhost:6379/0"))'
            )
            if module := MODULE_FILE.fullmatch(first):
                path_in_page = module["path"]
                compile(body, where, "exec")  # a module no block imports is still checked
                page.files[path_in_page] = page.files.get(path_in_page, "") + body
                page.file_blocks += 1
            elif NOT_RUN.match(first):
                page.not_run.append(line)
            else:
                page.steps.append({"kind": "python", "line": line, "source": body, "worker": ".wait(" in body})
        elif lang in SHELL:
            for offset, command in enumerate(body.splitlines()):
                command = command.removeprefix("$ ").strip()
                if command.startswith("taskit "):
                    assert not re.search(r"(^|\s)(-u|--url)(\s|=|$)", command), (
                        f"{page.name}:{line + offset}: name no Redis URL in a command "
                        "(TASKIT_REDIS_URL picks it; the tests run commands against their own Redis)"
                    )
                    page.steps.append({"kind": "command", "line": line + offset, "command": command})
    return page


def write_files(page: Page, workdir: Path) -> None:
    for relative, source in page.files.items():
        target = workdir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
        for package in target.relative_to(workdir).parents:
            if package != Path("."):
                (workdir / package / "__init__.py").touch(exist_ok=True)


@pytest.mark.parametrize("path", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_the_snippets_of_a_page_run_as_written(
    path: Path, connection: redis.Redis, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = parse(path)
    if not page.steps:
        pytest.skip(f"{page.name} has no snippet to run")
    assert page.modules or not any(step.get("worker") for step in page.steps), (
        f"{page.name} waits for a job but shows no task module (a block starting `# myapp/tasks.py`)"
    )
    workdir = tmp_path / "page"
    workdir.mkdir()
    write_files(page, workdir)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"page": str(path), "workdir": str(workdir), "modules": page.modules,
                                "steps": page.steps}))
    monkeypatch.setenv("TASKIT_REDIS_URL", redis_server.url)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "docs_runner.py"), str(plan)],
        check=False, cwd=workdir, capture_output=True, text=True, timeout=240,
    )
    print(done.stdout, done.stderr)  # shown by pytest -rP
    assert done.returncode == 0, f"{page.name}:\n{done.stdout}{done.stderr}"
    ran = done.stdout.count("ran the python block at ") + done.stdout.count("ran `taskit ")
    assert ran == len(page.steps), done.stdout


def test_every_python_block_is_run_or_says_why_not() -> None:
    """A python block is run, is a module file of its page, or is marked `# not run: REASON`."""
    pages = [parse(path) for path in PAGES]
    run = sum(1 for page in pages for step in page.steps if step["kind"] == "python")
    files = sum(page.file_blocks for page in pages)
    not_run = [f"{page.name}:{line}" for page in pages for line in page.not_run]
    total = sum(len(re.findall(r"^```python$", path.read_text(), re.MULTILINE)) for path in PAGES)
    assert (run, files, len(not_run)) != (0, 0, 0)
    assert run + files + len(not_run) == total, "a python block the parser did not see: check its fences"
    assert len(not_run) <= 2, f"blocks not run: {not_run}; make them run"


def test_ci_runs_the_readme_test_command_as_written() -> None:
    """The README's way to run the tests is what CI runs, so a fresh machine can trust it."""
    readme = (ROOT / "README.md").read_text()
    (command,) = [line for line in readme.splitlines() if line.endswith("python -m pytest")]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
