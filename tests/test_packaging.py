"""The wheel ships every module and data file of taskit (an editable install hides a gap).

The wheel is built from a copy of the files a build reads, so a stale build/ directory of
the checkout cannot fill a gap. `.ci/run` goes further: it installs the wheel into a fresh
virtualenv and runs a real worker from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import ROOT

BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md")
SHIPPED = ("*.py", "*.lua", "py.typed")


def source_files() -> set[str]:
    package = ROOT / "taskit"
    return {
        path.relative_to(ROOT).as_posix()
        for pattern in SHIPPED
        for path in package.rglob(pattern)
        if "__pycache__" not in path.parts
    }


def test_the_wheel_contains_every_module_and_lua_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "taskit", source / "taskit", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True, timeout=240,
    )
    (wheel,) = out.glob("taskit-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = source_files()
    assert {"taskit/storage/__init__.py", "taskit/lua/claim.lua", "taskit/lua/lib/records.lua", "taskit/py.typed"} <= expected
    assert sorted(expected - shipped) == []


def test_no_install_line_names_taskit_alone_which_pypi_has_for_another_project() -> None:
    """taskit is installed from a copy or a wheel; `pip install 'taskit[dashboard]'` (in the
    docs and in the errors of a missing extra, before) fetched PyPI's unrelated 'taskit'."""
    import re

    by_name = re.compile(r"pip install[^\n`]*?(?<![\w/.-])['\"]?taskit(\[|['\"\s`]|$)", re.MULTILINE)
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "taskit").rglob("*.py")]
    found = [f"{path.relative_to(ROOT)}: {m.group(0)}" for path in texts for m in by_name.finditer(path.read_text())]
    assert found == []
