"""Small helpers shared by the peer modules."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def script(name: str) -> str:
    """A console script installed beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed; pip install -e '.[bench]'")
    return found


def guarded(command: list[str]) -> list[str]:
    """`command`, run through a launcher that makes it die with its parent (see `main`)."""
    return [sys.executable, "-m", "bench.peers.tools", *command]


def main() -> None:
    """Launcher: ask Linux to SIGKILL this process when its parent dies, then exec the command.

    Done in a process of its own rather than in `preexec_fn` (unsafe in a process with
    threads), so an interrupted benchmark leaves no worker or redis-server behind.
    """
    import ctypes
    import os
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the normal clean-up paths still apply
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
