"""Types that can never move between steps, detected by type before anything runs.

They hold live process state (an open descriptor, a running frame, a lock, a
connection); serializing them either fails half-way through a run or, worse,
"succeeds" and yields a dead object.  The check looks at ``sys.modules`` so it
never imports a module just to ask whether a value belongs to it.
"""

from __future__ import annotations

import io
import sys

from ..errors import UnmarshallableError

# (module, attribute path, why) — checked with isinstance only when the module is already imported
_BY_MODULE = (
    ("types", "GeneratorType", "a generator is a paused function"),
    ("types", "AsyncGeneratorType", "an async generator is a paused function"),
    ("types", "CoroutineType", "a coroutine is a paused function"),
    ("types", "FrameType", "a frame belongs to a running call"),
    ("types", "TracebackType", "a traceback points into finished frames"),
    ("types", "ModuleType", "a module is imported, not passed; import it in the step (%%imports)"),
    ("_thread", "LockType", "a lock only means something inside one process"),
    ("_thread", "RLock", "a lock only means something inside one process"),
    ("threading", "Condition", "a lock only means something inside one process"),
    ("threading", "Semaphore", "a lock only means something inside one process"),
    ("threading", "Event", "a lock only means something inside one process"),
    ("threading", "Barrier", "a lock only means something inside one process"),
    ("threading", "Thread", "a thread runs inside one process"),
    ("socket", "socket", "a socket is an open connection"),
    ("ssl", "SSLSocket", "a socket is an open connection"),
    ("select", "epoll", "a poller holds open descriptors"),
    ("mmap", "mmap", "a memory map is an open file"),
    ("sqlite3", "Connection", "a database connection is open state"),
    ("sqlite3", "Cursor", "a database cursor is open state"),
    ("subprocess", "Popen", "a child process belongs to the process that started it"),
    ("multiprocessing.process", "BaseProcess", "a child process belongs to the process that started it"),
    ("multiprocessing.pool", "Pool", "a process pool belongs to the process that started it"),
    ("concurrent.futures", "Executor", "an executor owns threads or processes"),
    ("concurrent.futures", "Future", "a future belongs to a running executor"),
    ("asyncio", "AbstractEventLoop", "an event loop runs inside one process"),
    ("asyncio", "Future", "a future belongs to a running event loop"),
    ("queue", "Queue", "a queue holds locks of this process"),
    ("weakref", "ref", "a weak reference cannot outlive its process"),
    ("psycopg2.extensions", "connection", "a database connection is open state"),
    ("psycopg", "Connection", "a database connection is open state"),
    ("pymysql.connections", "Connection", "a database connection is open state"),
    ("sqlalchemy.engine", "Engine", "a database engine holds open connections"),
    ("sqlalchemy.engine", "Connection", "a database connection is open state"),
    ("sqlalchemy.orm", "Session", "a database session is open state"),
)

_IN_MEMORY_FILES = (io.BytesIO, io.StringIO)


def why_unmarshallable(obj) -> str | None:
    """Why ``obj`` can never be marshalled, or None when it may be."""
    if isinstance(obj, io.IOBase) and not isinstance(obj, _IN_MEMORY_FILES):
        return "a file object is an open descriptor; pass its path instead"
    for module_name, attribute, why in _BY_MODULE:
        module = sys.modules.get(module_name)
        cls = getattr(module, attribute, None) if module is not None else None
        if isinstance(cls, type) and isinstance(obj, cls):
            return why
    return None


def check_marshallable(obj) -> None:
    """Raise :class:`UnmarshallableError` naming the type when ``obj`` can never be marshalled."""
    why = why_unmarshallable(obj)
    if why is not None:
        cls = type(obj)
        name = cls.__qualname__ if cls.__module__ in ("builtins", "types") else f"{cls.__module__}.{cls.__qualname__}"
        error = UnmarshallableError(f"a value of type {name} cannot be passed between steps ({why})")
        error.reason = why
        raise error


def refusal(name: str, value, step: str, why: str) -> str:
    """The sentence refusing to pass variable ``name`` on: the same at validation and, when no kernel
    held the value (``kale-magic run``), in the step that saves it."""
    cls = type(value)
    return (f"'{name}' (a {cls.__module__}.{cls.__qualname__}, produced by step '{step}') cannot be passed "
            f"between steps ({why}); re-create it inside each step that uses it, or in %%functions.")
