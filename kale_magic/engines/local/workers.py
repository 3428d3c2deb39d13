"""A warm worker server: one long-lived process that has imported IPython and friends
once, and forks a fresh child for every step.

Starting a Python process and importing IPython costs ~0.2 s; forking a warm one
costs a few milliseconds, which is what keeps the local engine's per-step overhead
small.  Each step still gets its own process (its own namespace, its own crash).

The server also imports the modules the notebook's ``%%imports`` and ``%%functions``
cells import (:meth:`WorkerServer.warm`), so a step that imports pandas pays for it
once per kernel, not once per step.  Local modules (found in the notebook's folder)
are never preloaded: steps import those from the run's snapshot.

Protocol, one JSON object per line: the engine writes ``{"id", "job"}`` to the
server's stdin; the server answers ``{"ready": true}`` once it has imported what it
preloads, ``{"id", "pid"}`` when a child starts and ``{"id", "exit"}`` when it ends
(jobs sent while it warms up wait in its stdin).  The server runs this module as
``__main__``: ``[--local=DIR ...] MODULE ...``.

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

import gc
import importlib
import importlib.util
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

def serve(arguments: list[str]) -> None:
    kernel, server = os.getppid(), os.getpid()  # before preloading, which may outlast the kernel
    # Answers go to a copy of stdout; stdout itself is /dev/null, so what a preloaded module prints
    # when imported cannot garble them.
    out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    local = [a.removeprefix("--local=") for a in arguments if a.startswith("--local=")]
    # what steps see when they import matplotlib, so a preloaded one draws into the step notebook
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for module in (a for a in arguments if not a.startswith("--local=")):
        _preload(module, local)
    from kale_magic.step.runtime import warm_up

    warm_up()
    _freeze_heap()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    die_with_server = _death_signal()
    children: dict[int, int] = {}
    buffer = b""

    def answer(message: dict) -> None:
        try:
            out.write(json.dumps(message).encode() + b"\n")
            out.flush()
        except BrokenPipeError:  # the engine went away (while this worker warmed up, say)
            _stop(children)

    answer({"ready": True})

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
                    for fd in (wake_r, wake_w, out.fileno()):
                        os.close(fd)
                    _child(request["job"], server, die_with_server)
                _own_group(pid)
                children[pid] = request["id"]
                answer({"id": request["id"], "pid": pid})


def _freeze_heap() -> None:
    """Keep the steps' garbage collections off the objects they inherit from this server.

    A forked step shares this server's pages until it writes to one; a full collection
    writes to every object it visits, so without this a step's first one copies ~3,000 of
    those pages (12 MiB), and a page first touched costs far more than its copy on a
    virtual machine that hands freed memory back to its host.
    """
    gc.collect()
    gc.freeze()


def _preload(module: str, local: list[str]) -> None:
    """Import ``module`` unless it is missing, broken or local code.

    Local code lives under a ``local`` folder (the notebook's) outside any ``site-packages``:
    steps import it from their snapshot, and a preloaded copy would go stale when it is edited.
    A virtualenv inside the notebook's folder holds libraries, not local code.
    """
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
        if spec is None:
            return
        places = [p for p in (spec.origin, *(spec.submodule_search_locations or ())) if p and os.path.isabs(p)]
        if any(_is_local(place, folder) for place in places for folder in local):
            return
        importlib.import_module(module)
    except Exception:  # a module that fails to import here fails (or not) in the step itself
        pass


def _is_local(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([path, folder]) != folder:
        return False
    return not {"site-packages", "dist-packages"} & set(path[len(folder):].split(os.sep))


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


def _child(data: dict, server: int, die_with_server) -> None:
    """In the forked child: become the step's process, run its job, never return."""
    code = 1
    try:
        from kale_magic.step.job import StepJob, StepJobError, write_refusal

        die_with_server(server)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own process group: what it starts is stopped with it
        try:
            job = StepJob.from_dict(data)
        except StepJobError as exc:
            write_refusal(data, str(exc))
            raise
        os.environ.clear()
        os.environ.update(job.env)
        sys.path[:] = job.sys_path
        os.chdir(job.cwd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        log = os.open(job.run_dir.log(job.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
    server: subprocess.Popen | None = None  # the worker process that forked it


class WorkerServer:
    """Client of a warm worker process; thread-safe; restarted if it dies.

    ``preload`` is what every worker imports; :meth:`warm` adds the notebook's own
    imports.  There is one worker process at a time: new imports replace it with one
    that preloads them, as soon as it has no step running.
    """

    def __init__(self, preload=PRELOAD):
        self.preload = list(preload)
        self.local: tuple[str, ...] = ()  # folders whose modules are never preloaded
        self._extra: tuple[str, ...] = ()  # the notebook's imports (warm)
        self._loading: tuple[str, ...] = ()  # what the running worker preloads
        self._ready = threading.Event()  # the running worker has imported them
        self._process: subprocess.Popen | None = None
        self._children: dict[int, Child] = {}
        self._lock = threading.Lock()
        self._next = 0

    @property
    def modules(self) -> tuple[str, ...]:
        """What a worker started now preloads."""
        return tuple(dict.fromkeys([*self.preload, *self._extra]))

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._loading = self.modules
        self._ready = ready = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kale_magic.engines.local.workers",
             *(f"--local={folder}" for folder in self.local), *self._loading],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": _python_path()},
            start_new_session=True)
        threading.Thread(target=self._read, args=(self._process, ready), daemon=True,
                         name="kale-worker-reader").start()

    def warm(self, modules, local=()) -> None:
        """Preload ``modules`` (besides ``preload``) from now on; never blocks.

        A worker lacking one of them is replaced by one that imports them, at once
        if it runs no step, else before the first step submitted once it is idle.
        Modules under the ``local`` folders are left to the steps.
        """
        with self._lock:
            self._extra = tuple(dict.fromkeys(modules))
            self.local = tuple(dict.fromkeys(str(folder) for folder in local))
            self._replace_if_stale()
            self._start()

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before one started)."""
        return self._process.pid if self._process is not None else None

    @property
    def importing(self) -> bool:
        """True while the running worker imports modules besides ``preload`` (the notebook's)."""
        return not self.ready and not set(self._loading) <= set(self.preload)

    @property
    def ready(self) -> bool:
        """True once the running worker has imported what it preloads."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker has preloaded its modules (or died: steps then fail, not hang)."""
        self.start()
        return self._ready.wait(timeout)

    def _replace_if_stale(self) -> None:
        """Retire a running worker that lacks modules now wanted, when it has no child (lock held)."""
        process = self._process
        if process is None or process.poll() is not None or set(self.modules) <= set(self._loading):
            return
        if any(c.server is process for c in self._children.values()):
            return
        self._process = None
        process.stdin.close()  # an idle worker exits on end of input
        if not self._ready.is_set():
            process.kill()  # still importing: it reads its input only afterwards
        threading.Thread(target=process.wait, daemon=True, name="kale-worker-retired").start()

    def submit(self, job: dict) -> Child:
        with self._lock:
            self._replace_if_stale()
            self._start()
            self._next += 1
            child = self._children[self._next] = Child(self._next, server=self._process)
            self._process.stdin.write(json.dumps({"id": child.id, "job": job}).encode() + b"\n")
            self._process.stdin.flush()
        return child

    def _read(self, process: subprocess.Popen, ready: threading.Event) -> None:
        for line in process.stdout:
            message = json.loads(line)
            if "ready" in message:
                ready.set()
                continue
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
        ready.set()  # the server is gone: nothing to wait for
        for child in [c for c in self._children.values() if c.server is process]:  # its children are lost
            child.exit = child.exit if child.exit is not None else -signal.SIGKILL
            child.started.set()
            child.done.set()
            self._children.pop(child.id, None)

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
