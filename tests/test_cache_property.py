"""Property: after any sequence of edits, a run with the cache gives exactly what a fresh ``--no-cache`` run
gives.  Hypothesis draws the edits (data files, a helper module on sys.path, a file a subprocess reads,
parameters, files no step reads, same-content rewrites) and the snapshot mode of each run."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_walk import CacheWalk

EXAMPLES, EDITS = 25, 8  # 200 edits, each checked against the oracle

numbers = st.lists(st.integers(-1000, 1000), min_size=1, max_size=6)
edits = st.one_of(
    st.tuples(st.just("csv"), numbers), st.tuples(st.just("parquet"), numbers),
    st.tuples(st.just("helper"), st.integers(-9, 9)), st.tuples(st.just("notes"), st.text("abc", max_size=5)),
    st.tuples(st.just("param"), st.integers(-3, 3)), st.tuples(st.just("scratch"), st.text("xy", max_size=4)),
    st.tuples(st.just("touch"), st.none()),
)


@pytest.fixture
def walk(kernel, tmp_path):
    walk = CacheWalk(kernel.shell, tmp_path)
    walk.start()
    yield walk
    assert walk.tally.edits >= EXAMPLES * EDITS


@pytest.mark.slow
@pytest.mark.timeout(1200)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(edits, st.booleans()), min_size=EDITS, max_size=EDITS))
def test_every_cached_run_equals_a_fresh_run(walk, steps):
    for (kind, value), no_snapshot in steps:
        walk.apply(kind, value)
        walk.check(no_snapshot)
    assert walk.tally.mismatches == []
