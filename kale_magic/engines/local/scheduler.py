"""What runs next: a pure schedule over a plan's step instances.

No threads, processes or state writes: the local engine asks it what is ready, tells
it what started and how each instance ended, and hears back which instances that
skips and why.  Its unit is a :class:`StepInstance` — a step, or one item of a step —
so that foreach items and conditions can be scheduled here without touching the
engine's loop.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Mapping

from ...skips import CANCEL, CONDITION, FAILURE, Skip

PENDING, RUNNING = "pending", "running"
DONE = ("succeeded", "cached")  # an instance whose children may run
ENDED = ("succeeded", "cached", "failed", "skipped")


@dataclass(frozen=True, order=True)
class StepInstance:
    """One schedulable unit: a whole step (``item`` None), or one item of a step."""

    step: str
    item: int | None = None

    def __str__(self) -> str:
        return self.step if self.item is None else f"{self.step}[{self.item}]"


class Schedule:
    """The status of every instance of one run; ``parents`` maps each step to its parents, in a
    topological order (the plan's).

    A ``--foreach`` step starts as one instance; once its items are known, :meth:`expand` replaces it
    by one instance per item.  ``itemwise`` maps a step to the parents it continues item by item (the
    same clause): its item i waits for their item i only, not for all of them.
    """

    def __init__(self, parents: Mapping[str, tuple[str, ...]], itemwise: Mapping[str, tuple[str, ...]] = {}):
        self._parents = {step: tuple(p) for step, p in parents.items()}
        self._itemwise = {step: frozenset(itemwise.get(step, ())) & set(p) for step, p in self._parents.items()}
        self._status = {StepInstance(step): PENDING for step in parents}
        # What is ready is kept as instances end, not searched for: a search of every instance (and of
        # its parents' instances) on each call made a run of N steps cost N^3.  It is kept in plan order
        # too (positions, and the instances at the same index): sorting it at each call made a loop of N
        # items cost N^2 log N.
        self._position = {instance: (i, -1) for i, instance in enumerate(self._status)}
        self._instances: dict[str, list[StepInstance]] = {step: [] for step in parents}
        for instance in self._status:
            self._instances[instance.step].append(instance)
        self._undone = {step: len(found) for step, found in self._instances.items()}  # not succeeded or cached
        self._children: dict[str, list[str]] = {step: [] for step in parents}
        for step, above in self._parents.items():
            for parent in set(above):
                self._children[parent].append(step)
        # whole parents not done (item-wise parents are waited for per item)
        self._unmet = {step: len(set(above) - self._itemwise[step]) for step, above in self._parents.items()}
        self._ready: list[StepInstance] = []
        self._ready_at: list[tuple[int, int]] = []  # their positions, sorted
        self._offer(i for i in self._status if self._unmet[i.step] == 0 and not self._itemwise[i.step])

    @property
    def status(self) -> dict[StepInstance, str]:
        return dict(self._status)

    def ready(self) -> list[StepInstance]:
        """Pending instances whose parents' instances all succeeded (or were cached), in plan order."""
        return list(self._ready)

    def expand(self, step: str, count: int) -> list[StepInstance]:
        """Replace ``step``'s one pending instance by ``count`` item instances (none: the step is done)."""
        whole = StepInstance(step)
        self._expect(whole, PENDING)
        self._withdraw(whole)
        position = self._position.pop(whole)[0]
        del self._status[whole]
        items = [StepInstance(step, i) for i in range(count)]
        for instance in items:
            self._status[instance] = PENDING
            self._position[instance] = (position, instance.item)
        self._instances[step] = items
        self._undone[step] = count
        if self._unmet[step] == 0:
            self._offer(i for i in items if self._items_done(i))
        if count == 0:
            self._undone[step] = 1
            self._done(step)
        return items

    def start(self, instance: StepInstance) -> None:
        self._expect(instance, PENDING)
        self._status[instance] = RUNNING
        self._withdraw(instance)

    def end(self, instance: StepInstance, status: str, why: str = "") -> dict[StepInstance, Skip]:
        """``instance`` ended with ``status`` (also a pending one served from the cache); a failure skips
        its pending descendants, and so does a skip (``why``: a false ``--if``): returned with the kind and
        sentence of each skip.  A skipped item skips only the items continuing it; the steps reading its
        step's lists still run."""
        if status not in ENDED:
            raise ValueError(f"unknown end status {status!r}")
        if self._status[instance] not in (PENDING, RUNNING):
            raise ValueError(f"{instance} already ended ({self._status[instance]})")
        self._withdraw(instance)
        self._status[instance] = status
        if status in DONE:
            self._done(instance.step)
            self._item_done(instance)
        if status == "skipped" and instance.item is not None:
            return self._drop(instance, why)
        if status == "skipped":
            skip = Skip(CONDITION, f"skipped: step '{instance}' was skipped" + (f" ({why})" if why else ""))
        elif status == "failed":
            skip = Skip(FAILURE, f"skipped: upstream step '{instance}' failed")
        else:
            return {}
        return self._skip([i for i in self._below(instance) if self._status[i] == PENDING], skip)

    def cancel(self) -> dict[StepInstance, Skip]:
        """Skip every pending instance; the running ones are the executor's to stop."""
        return self._skip([i for i, s in self._status.items() if s == PENDING],
                          Skip(CANCEL, "skipped: the run was cancelled"))

    def descendants(self, step: str) -> list[StepInstance]:
        """The instances of every step that runs after ``step``, in plan order."""
        below: list[str] = []
        for name, parents in self._parents.items():  # topological order: parents come first
            if step in parents or any(p in below for p in parents):
                below.append(name)
        return [i for i in self._status if i.step in below]

    def _drop(self, instance: StepInstance, why: str) -> dict[StepInstance, Skip]:
        """An item's own ``--if`` was false: it and the items continuing it (same clause) are skipped and
        leave the fan-in, which goes on with the items that ran; nothing else is skipped."""
        linked = self._linked(instance)
        chain = [i for i in self.descendants(instance.step)
                 if i.step in linked and i.item == instance.item and self._status[i] == PENDING]
        skipped = self._skip(chain, Skip(CONDITION, f"skipped: step '{instance}' was skipped"
                                         + (f" ({why})" if why else "")))
        for dropped in [instance, *chain]:
            self._done(dropped.step)
        return skipped

    def _linked(self, instance: StepInstance) -> set[str]:
        """``instance``'s step and the steps continuing its items (same clause), when it is an item."""
        linked = {instance.step} if instance.item is not None else set()
        for name in self._parents:  # topological order
            if self._itemwise[name] & linked and not (set(self._parents[name]) - self._itemwise[name]) & linked:
                linked.add(name)
        return linked

    def _below(self, instance: StepInstance) -> list[StepInstance]:
        """What a failure of ``instance`` stops: every instance of its descendants, except that the steps
        continuing a failed item lose that item only."""
        linked = self._linked(instance)
        return [i for i in self.descendants(instance.step) if i.step not in linked or i.item == instance.item]

    @property
    def running(self) -> list[StepInstance]:
        return [i for i, s in self._status.items() if s == RUNNING]

    @property
    def failed(self) -> list[StepInstance]:
        return [i for i, s in self._status.items() if s == "failed"]

    def _done(self, step: str) -> None:
        """One more instance of ``step`` succeeded, was cached or (an item) was dropped by its ``--if``; when
        all have, its children may run."""
        self._undone[step] -= 1
        if self._undone[step]:
            return
        for child in self._children[step]:
            if step in self._itemwise[child]:
                continue
            self._unmet[child] -= 1
            if self._unmet[child] == 0:
                self._offer(i for i in self._instances[child] if self._items_done(i))

    def _item_done(self, instance: StepInstance) -> None:
        """Item i of a step succeeded: item i of the steps continuing it may run, if the rest is done."""
        if instance.item is None:
            return
        for child in self._children[instance.step]:
            if instance.step in self._itemwise[child] and self._unmet[child] == 0:
                mine = StepInstance(child, instance.item)
                if mine in self._status and self._items_done(mine):
                    self._offer([mine])

    def _items_done(self, instance: StepInstance) -> bool:
        """The item-wise parents of ``instance`` have finished its item (vacuous for other steps)."""
        if not self._itemwise[instance.step]:
            return True
        if instance.item is None:
            return False  # continued item by item: runs once expanded
        return all(self._status.get(StepInstance(p, instance.item)) in DONE for p in self._itemwise[instance.step])

    def _skip(self, instances: list[StepInstance], skip: Skip) -> dict[StepInstance, Skip]:
        for instance in instances:
            self._withdraw(instance)
            self._status[instance] = "skipped"
        return {instance: skip for instance in instances}

    def _offer(self, instances) -> None:
        """Pending ``instances`` whose parents are done join the ready ones, in plan order."""
        for instance in instances:
            if self._status[instance] != PENDING:
                continue
            at = self._position[instance]
            index = bisect_left(self._ready_at, at)
            if index < len(self._ready_at) and self._ready_at[index] == at:
                continue  # already ready
            self._ready_at.insert(index, at)
            self._ready.insert(index, instance)

    def _withdraw(self, instance: StepInstance) -> None:
        """``instance`` leaves the ready ones (it started, ended or was skipped), if it was one."""
        at = self._position[instance]
        index = bisect_left(self._ready_at, at)
        if index < len(self._ready_at) and self._ready_at[index] == at:
            del self._ready_at[index]
            del self._ready[index]

    def _expect(self, instance: StepInstance, status: str) -> None:
        if self._status[instance] != status:
            raise ValueError(f"{instance} is {self._status[instance]}, not {status}")
