"""The items of a ``--foreach VAR in NAME`` clause, the same in the kernel, a step and the engines.

One function decides what a value's items are, so the kernel's loop, the item a step
binds and the number of instances an engine runs can never disagree.  Accepted: a list,
tuple, range, dict (its keys, in order), 1-D numpy array and pandas Series or Index;
anything else (a generator, which a second reader would find empty; a set, whose order
is not the kernel's in another process; a string, rarely meant as its characters) is
refused in one sentence.
"""

from __future__ import annotations

import hashlib
import pickle

from .errors import KaleError

MAX_ITEMS = 10_000  # each item is a process (locally) or a pod (KFP): more is a typo or a job for one step


def items(value, step: str, name: str) -> list:
    """The items of ``value`` (the foreach clause's ``name`` in ``step``), in order; a ``KaleError`` saying
    why the value cannot be iterated by a foreach step."""
    kind = f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")
    if isinstance(value, (list, tuple, range)):
        out = list(value)
    elif isinstance(value, dict):
        out = list(value.keys())
    elif kind.startswith("numpy.") and hasattr(value, "ndim") and hasattr(value, "tolist"):
        if value.ndim != 1:
            raise KaleError(f"step '{step}' loops over '{name}', a {value.ndim}-D numpy array of shape "
                            f"{tuple(value.shape)}; loop over a 1-D array or a list (e.g. list({name})).")
        out = list(value)
    elif kind.startswith("pandas.") and type(value).__name__ in ("Series", "Index") or _pandas_index(value):
        out = list(value)
    else:
        raise KaleError(f"step '{step}' loops over '{name}' ({kind}), which --foreach cannot iterate; make it "
                        "a list, tuple, range, dict, 1-D numpy array or pandas Series (e.g. list(...)).")
    if len(out) > MAX_ITEMS:
        raise KaleError(f"step '{step}' loops over '{name}' ({kind}) of {len(out):,} items, more than "
                        f"--foreach runs ({MAX_ITEMS:,}); loop over batches of them instead.")
    return out


def _pandas_index(value) -> bool:
    """A pandas Index subclass (RangeIndex, DatetimeIndex...) without importing pandas."""
    return any(c.__module__.split(".")[0] == "pandas" and c.__name__ == "Index" for c in type(value).__mro__)


def item_digest(item) -> str:
    """What an item's cache entry is keyed on: its pickled bytes (its repr when it does not pickle)."""
    try:
        data = pickle.dumps(item, protocol=5)
    except Exception:  # noqa: BLE001 - any unpicklable item still needs a key; its repr is the safe one
        data = repr(item).encode()
    return hashlib.sha256(data).hexdigest()[:16]
