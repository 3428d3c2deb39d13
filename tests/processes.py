"""Finding a test's processes without psutil: ``/proc`` entries whose environment carries a marker."""

import os
import signal
import time
from pathlib import Path

MARK = "KALE_TEST_MARK"  # set to a fresh token in the environment of the processes a test watches


def marked(token: str) -> set[int]:
    """Pids of the live processes (zombies excluded) started with ``MARK=token`` in their environment."""
    needle = f"{MARK}={token}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and stat[stat.rindex(")") + 2] not in "ZX":
            found.add(int(entry.name))
    return found


def command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def wait_for(condition, timeout: float, interval: float = 0.1):
    """``condition()``'s first true value within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def kill_marked(token: str) -> None:
    """After a failed test: end what it left running (only processes carrying its own token)."""
    for pid in marked(token):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
