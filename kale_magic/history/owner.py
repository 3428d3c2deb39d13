"""Who is running a run: the kernel process that recorded it.

A run recorded as ``running`` stays so in ``runs.db`` if its kernel is killed;
the owner lets the next reader tell.  A process is named by its host, its pid
and (on Linux) its start time since this boot, so that a pid reused by another
process is not taken for the kernel.  From another host nothing can be told,
and such a run keeps its status.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: str = ""  # "<boot id>:<start time in clock ticks>" on Linux, "" where unknown

    @classmethod
    def current(cls) -> "Owner":
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()) or "")

    @classmethod
    def from_dict(cls, data: dict) -> "Owner | None":
        try:
            return cls(str(data["host"]), int(data["pid"]), str(data.get("started", "")))
        except (KeyError, TypeError, ValueError):
            return None  # recorded before owners were (or damaged): nothing can be told

    def as_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool | None:
        """Whether the process still runs; None when that cannot be told from this host."""
        if self.host != socket.gethostname():
            return None
        if self.started:
            return _start_time(self.pid) == self.started
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _start_time(pid: int) -> str | None:
    """The process's boot id and start time (Linux ``/proc``); None when it is gone, a zombie, or unknown."""
    try:
        boot = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (command) ": state is field 3
    if fields[0] in ("Z", "X"):  # dead, not yet reaped by its parent
        return None
    return f"{boot}:{fields[19]}"  # field 22, starttime
