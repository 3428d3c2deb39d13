"""Loading plug-ins from entry points, the same way for every registry (marshal backends, engines, read hooks)."""

from __future__ import annotations

import warnings


def load_entry_points(group: str, register, *, skip=(), broken: dict, kind: str, consequence: str = "") -> None:
    """Register each installed plug-in of entry-point ``group`` (in name order) whose name is not in ``skip``
    (runtime registrations and built-ins win).  One that fails to load is recorded in ``broken`` (name ->
    why) and warned about, never raised: a broken plug-in must not break every run."""
    from importlib.metadata import entry_points

    for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
        if entry_point.name in skip:
            continue
        try:
            register(entry_point.load())
        except Exception as exc:  # noqa: BLE001 (whatever a plug-in raises, it is reported, not fatal)
            broken[entry_point.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"kale-magic: {kind} entry point '{entry_point.name}' ({entry_point.value}) "
                          f"failed to load: {exc}{consequence}", stacklevel=3)
