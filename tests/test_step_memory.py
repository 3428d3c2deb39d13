"""What a step's process costs in memory around its values: pages it copies from the warm worker."""

from __future__ import annotations


def test_a_steps_garbage_collection_leaves_the_worker_servers_objects_alone(kernel):
    """The server froze its heap before forking: a step's collections skip the inherited objects (so they
    do not copy the pages holding them), and still collect the step's own garbage."""
    kernel.cells("%%imports\nimport gc",
                 "%%step probe\n"
                 "class Cycle:\n    pass\n"
                 "c = Cycle()\nc.me = c\ndel c\n"
                 "inherited = gc.get_freeze_count()\n"
                 "collected = gc.collect()")
    run = kernel.kale_run()
    assert run.status == "succeeded"
    assert run.load("inherited") > 10_000  # IPython, kale_magic and numpy's objects, frozen in the server
    assert run.load("collected") >= 1  # the step's own cycle
