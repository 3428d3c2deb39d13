"""A warm worker server: one long-lived process that has imported IPython and friends
once, and forks a fresh child for every step.

Starting a Python process and importing IPython costs ~0.2 s; forking a warm one
costs a few milliseconds, which is what keeps the local engine's per-step overhead
small.  Each step still gets its own process (its own namespace, its own crash).

Protocol, one JSON object per line: the engine writes ``{"id", "job"}`` to the
server's stdin; the server answers ``{"id", "pid"}`` when the child starts and
``{"id", "exit"}`` when it ends.  The server runs this module as ``__main__``.

Nothing outlives the kernel.  Each step is the leader of its own process group,
so what it starts (``!cmd``, ``subprocess``) is in that group, and the group is
killed when the step ends.  The server ends every group and exits when the
kernel goes away: its stdin reaches end-of-file, or (if a process the kernel
forked still holds the pipe open) its parent changes.  Steps also ask Linux to
kill them when the server dies (``PR_SET_PDEATHSIG``).  The server itself does
not: that signal follows the *thread* that started it, and a kernel may start
the server from a run's thread that ends long before the kernel does.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

# Imported once by the server; missing optional ones are skipped.  Kale.preload adds more.
PRELOAD = ("IPython.core.interactiveshell", "kale_magic.step.runtime", "kale_magic.marshal", "numpy")
PARENT_CHECK = 1.0  # seconds between the server's checks that the kernel is still its parent


# the server side (runs in the worker process) -----------------------------------------

def serve(preload: list[str]) -> None:
    for module in preload:
        try:
            __import__(module)
        except ImportError:
            pass
    from kale_magic.step.runtime import warm_up

    warm_up()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    kernel, server = os.getppid(), os.getpid()
    die_with_server = _death_signal()
    children: dict[int, int] = {}
    buffer = b""
    out = sys.stdout.buffer

    def answer(message: dict) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    while True:
        try:
            ready, _, _ = select.select([0, wake_r], [], [], PARENT_CHECK)
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
        for pid, code in _ended(children):
            answer({"id": children.pop(pid), "exit": code})
        if os.getppid() != kernel:  # the kernel died while a process it forked keeps our stdin open
            _stop(children)
        if 0 in ready:
            data = os.read(0, 1 << 16)
            if not data:  # the engine went away
                _stop(children)
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    _child(request["job"], server, die_with_server)
                _own_group(pid)
                children[pid] = request["id"]
                answer({"id": request["id"], "pid": pid})


def _ended(children: dict[int, int]):
    """(pid, exit code) of each step that ended; what it started is killed before it is reaped,
    so that its process group id cannot have been reused by then."""
    while children:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None:
            return
        _kill_group(info.si_pid)
        _, status = os.waitpid(info.si_pid, 0)
        if info.si_pid in children:
            yield info.si_pid, os.waitstatus_to_exitcode(status)


def _stop(children: dict[int, int]) -> None:
    """End every running step and what it started, then the server; skip atexit hooks (the warm-up shell's)."""
    for pid in children:
        _kill_group(pid)
    os._exit(0)


def _own_group(pid: int) -> None:
    """Make the child a group leader from this side too, so no kill finds it still in the server's group."""
    try:
        os.setpgid(pid, pid)
    except OSError:  # it did so itself already, or has ended
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _death_signal():
    """``arm(parent)``: from now on the calling process gets SIGKILL when ``parent`` dies.

    Linux only (``PR_SET_PDEATHSIG``); elsewhere the server's group kills cover it.
    """
    if not sys.platform.startswith("linux"):
        return lambda parent: None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def arm(parent: int) -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # it died before the request took effect
            os._exit(1)

    return arm


def _child(job: dict, server: int, die_with_server) -> None:
    """In the forked child: become the step's process, run it, never return."""
    code = 1
    try:
        die_with_server(server)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own process group: what it starts is stopped with it
        os.environ.clear()
        os.environ.update(job["env"])
        sys.path[:] = job["sys_path"]
        os.chdir(job["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)  # output of subprocesses (`!cmd`) and C code goes to the log too
        os.dup2(log, 2)
        from kale_magic.step.runtime import run_job

        code = run_job(job)
    finally:
        os._exit(code)


def _python_path() -> str:
    """The kernel's import path, with this very kale_magic first, so the worker runs the same code."""
    package_root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
    paths = [package_root] + [os.path.abspath(p) for p in sys.path if p]
    return os.pathsep.join(dict.fromkeys(paths))


# the engine side ------------------------------------------------------------------------

@dataclass
class Child:
    id: int
    pid: int | None = None
    exit: int | None = None
    started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class WorkerServer:
    """Client of a warm worker process; thread-safe; restarted if it dies."""

    def __init__(self, preload=PRELOAD):
        self.preload = list(preload)
        self._process: subprocess.Popen | None = None
        self._children: dict[int, Child] = {}
        self._lock = threading.Lock()
        self._next = 0

    def start(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._process = subprocess.Popen(
                [sys.executable, "-m", "kale_magic.engines.local.workers", *self.preload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": _python_path()},
                start_new_session=True)
            threading.Thread(target=self._read, args=(self._process,), daemon=True,
                             name="kale-worker-reader").start()

    def submit(self, job: dict) -> Child:
        self.start()
        with self._lock:
            self._next += 1
            child = self._children[self._next] = Child(self._next)
            self._process.stdin.write(json.dumps({"id": child.id, "job": job}).encode() + b"\n")
            self._process.stdin.flush()
        return child

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            message = json.loads(line)
            child = self._children.get(message["id"])
            if child is None:
                continue
            if "pid" in message:
                child.pid = message["pid"]
                child.started.set()
            else:
                child.exit = message["exit"]
                self._children.pop(child.id, None)
                child.done.set()
        for child in list(self._children.values()):  # the server died: its children are lost
            child.exit = child.exit if child.exit is not None else -signal.SIGKILL
            child.started.set()
            child.done.set()
        self._children.clear()

    def kill(self, child: Child) -> None:
        child.started.wait(5)
        if child.pid:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.stdin.close()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    serve(sys.argv[1:])
