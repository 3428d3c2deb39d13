"""Why a step or an item was skipped, as a kind every floor spells the same way.

The local scheduler and the KFP engine give each skip its kind, :class:`~kale_magic.run.state.StepState`
carries it beside the message (``skip``), and the run store keeps it in a column of its own; whoever must
tell a condition's skip from a failure's asks the kind, never the message's words.
"""

from __future__ import annotations

from typing import NamedTuple

CONDITION = "condition"  # its own --if was false, or a step (or item) it needs was skipped by one: the run goes on
FAILURE = "failure"  # a step (or item) it needs failed
CANCEL = "cancel"  # the run was cancelled (or ended) before it started
INTERRUPTED = "interrupted"  # the kernel following the run ended before it started
NOT_SELECTED = "not-selected"  # a partial run (--only, --from, --to) left it out
KINDS = (CONDITION, FAILURE, CANCEL, INTERRUPTED, NOT_SELECTED)


class Skip(NamedTuple):
    """A skip as the scheduler hands it on: its kind and the sentence shown for it."""

    kind: str
    message: str


def skipped_by_condition(state) -> bool:
    """A step or item (a run state's, or the run store's record of one) skipped by a false ``--if``, its own
    or one above it, rather than by a failure, a cancel or an interrupted run: a list after a loop leaves
    such an item out, and the run goes on."""
    return state.status == "skipped" and state.skip == CONDITION
