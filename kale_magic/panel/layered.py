"""A small layered layout (after Sugiyama) for the pipeline graph: in-process, deterministic.

1. **Layers** by longest path from the roots: a step sits one layer below its
   deepest parent, so independent branches end up side by side.
2. **Edge items.**  Every flow is an edge (:meth:`Plan.flows`: parent -> child, and long edges
   from an ancestor whose values a step loads directly).  Between two layers lies a half-layer holding what flows:
   one value label per producer and set of names (consumers reading the same
   values share it), and dummies where an edge skips layers.  Labels and long
   edges take part in ordering and spacing like nodes, so they never overlap a
   node or each other.
3. **Order** within each layer by barycentres of the neighbours, sweeping down
   and up, keeping the order with the fewest crossings; ties keep notebook order.
4. **Position** along each layer by constrained least squares: every item as
   near the mean of its neighbours as the order and the gaps allow
   (pool-adjacent-violators), sweeping up and down.

Top down by default; left to right when top down would be wider than
``max_width`` and sideways is narrower (a wide fan-out then stacks vertically).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from typing import Callable

from ..plan import Plan

MARGIN = 10
NODE_GAP, ITEM_GAP = 22, 10  # px along a layer: between two nodes, between other items
RANK_GAP = {True: 14, False: 30}  # px between layers, top down / left to right (room for fanning curves)
SWEEPS = 12

Key = tuple  # ("step", name) | ("value", producer, names) | ("via", producer, consumer, rank)
Size = Callable[[Key], tuple[float, float]]  # an item's (width, height) drawn top down


@dataclass(frozen=True)
class Edge:
    """A producer → consumer edge and the items it passes through (both ends included); ``long`` when the
    producer is an ancestor, not a parent, of the consumer."""

    producer: str
    consumer: str
    names: tuple[str, ...]
    chain: tuple[Key, ...]
    long: bool = False


@dataclass(frozen=True)
class Box:
    """An item's centre and size in picture coordinates."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Layout:
    """Where everything goes."""

    vertical: bool  # True: layers top to bottom; False: left to right
    width: float
    height: float
    boxes: dict[Key, Box]
    edges: tuple[Edge, ...]


# -- layers and items -----------------------------------------------------------
def _layers(plan: Plan) -> dict[str, int]:
    """Longest path from a root (``plan.steps`` is in topological order)."""
    layer: dict[str, int] = {}
    for name, step in plan.steps.items():
        layer[name] = 1 + max((layer[p] for p in step.parents), default=-1)
    return layer


def _items(plan: Plan):
    """Ranks (layer L at rank 2L, edge items in between), edges, and neighbours across ranks."""
    layer = _layers(plan)
    rank: dict[Key, int] = {("step", name): 2 * layer[name] for name in plan.steps}
    edges = []
    for producer, consumer, names in plan.flows():
        first, last = 2 * layer[producer] + 1, 2 * layer[consumer] - 1
        via = [("value", producer, names) if names else ("via", producer, consumer, first)]
        via += [("via", producer, consumer, r) for r in range(first + 1, last + 1)]
        for key, r in zip(via, range(first, last + 1)):
            rank[key] = r
        edges.append(Edge(producer, consumer, names, (("step", producer), *via, ("step", consumer)),
                          producer not in plan.steps[consumer].parents))
    up: dict[Key, list[Key]] = {key: [] for key in rank}
    down: dict[Key, list[Key]] = {key: [] for key in rank}
    for edge in edges:
        for a, b in zip(edge.chain, edge.chain[1:]):
            if b not in down[a]:
                down[a].append(b)
                up[b].append(a)
    return rank, edges, up, down


# -- order within ranks -----------------------------------------------------------
def _crossings(ranks: list[list[Key]], down: dict[Key, list[Key]]) -> int:
    total = 0
    for upper, lower in zip(ranks, ranks[1:]):
        at = {key: i for i, key in enumerate(lower)}
        segments = sorted((i, at[b]) for i, a in enumerate(upper) for b in down[a])
        seen: list[int] = []
        for _, j in segments:
            total += len(seen) - bisect_right(seen, j)
            insort(seen, j)
    return total


def _reorder(rank: list[Key], neighbours: dict[Key, list[Key]], other: list[Key]) -> list[Key]:
    at = {key: i for i, key in enumerate(other)}

    def barycentre(item: tuple[int, Key]) -> tuple[float, int]:
        index, key = item
        near = neighbours[key]
        return (sum(at[n] for n in near) / len(near) if near else index, index)

    return [key for _, key in sorted(enumerate(rank), key=barycentre)]


def _order(rank: dict[Key, int], up, down) -> list[list[Key]]:
    ranks: list[list[Key]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for key, r in rank.items():  # insertion order: steps in plan order, then edge items
        ranks[r].append(key)
    for r in range(1, len(ranks)):
        ranks[r] = _reorder(ranks[r], up, ranks[r - 1])
    best, fewest = [list(r) for r in ranks], _crossings(ranks, down)
    for sweep in range(SWEEPS):
        if fewest == 0:
            break
        if sweep % 2 == 0:
            for r in range(1, len(ranks)):
                ranks[r] = _reorder(ranks[r], up, ranks[r - 1])
        else:
            for r in range(len(ranks) - 2, -1, -1):
                ranks[r] = _reorder(ranks[r], down, ranks[r + 1])
        count = _crossings(ranks, down)
        if count < fewest:
            best, fewest = [list(r) for r in ranks], count
    return best


# -- positions --------------------------------------------------------------------
def _fit(targets: list[float], gaps: list[float]) -> list[float]:
    """Positions in order, ``gaps[i]`` apart at least, nearest to ``targets`` in least squares."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    blocks: list[list[float]] = []  # [sum, count] of merged runs
    for target, offset in zip(targets, offsets):
        blocks.append([target - offset, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted = [total / count for total, count in blocks for _ in range(int(count))]
    return [y + offset for y, offset in zip(fitted, offsets)]


def _place(ranks: list[list[Key]], along: dict[Key, float], up, down) -> dict[Key, float]:
    def gaps(rank: list[Key]) -> list[float]:
        return [(along[a] + along[b]) / 2 + (NODE_GAP if a[0] == b[0] == "step" else ITEM_GAP)
                for a, b in zip(rank, rank[1:])]

    pos: dict[Key, float] = {}
    for rank in ranks:
        pos.update(zip(rank, _fit([0.0] * len(rank), gaps(rank))))
    # Up then down, ending down: a label or dummy lines up with the item it comes from.
    passes = [(r, down) for r in range(len(ranks) - 2, -1, -1)] + [(r, up) for r in range(1, len(ranks))]
    for _ in range(4):
        for r, neighbours in passes:
            rank = ranks[r]
            targets = [sum(pos[n] for n in neighbours[k]) / len(neighbours[k]) if neighbours[k] else pos[k]
                       for k in rank]
            pos.update(zip(rank, _fit(targets, gaps(rank))))
    return pos


def layout(plan: Plan, size: Size, max_width: float) -> Layout:
    """Where every step, value label and edge goes; ``size`` measures the items."""
    rank, edges, up, down = _items(plan)
    ranks = _order(rank, up, down)
    top_down = _geometry(ranks, edges, up, down, size, True)
    if top_down.width <= max_width:
        return top_down
    sideways = _geometry(ranks, edges, up, down, size, False)
    return sideways if sideways.width < top_down.width else top_down


def _geometry(ranks, edges, up, down, size: Size, vertical: bool) -> Layout:
    sizes = {k: size(k) if vertical else size(k)[::-1] for r in ranks for k in r}  # (along, across)
    pos = _place(ranks, {k: s[0] for k, s in sizes.items()}, up, down)
    low = min((pos[k] - sizes[k][0] / 2 for r in ranks for k in r), default=0.0)
    high = max((pos[k] + sizes[k][0] / 2 for r in ranks for k in r), default=0.0)
    boxes, across = {}, MARGIN
    for rank in ranks:
        thickness = max((sizes[k][1] for k in rank), default=0.0)
        for key in rank:
            a, c = pos[key] - low + MARGIN, across + thickness / 2
            w, h = sizes[key] if key[0] != "via" else (sizes[key][0], thickness)
            boxes[key] = Box(a, c, w, h) if vertical else Box(c, a, h, w)
        across += thickness + RANK_GAP[vertical]
    along = high - low + 2 * MARGIN
    across = max(across - RANK_GAP[vertical] + MARGIN, 2 * MARGIN)
    extent = (along, across) if vertical else (across, along)
    return Layout(vertical, *extent, boxes, tuple(edges))
