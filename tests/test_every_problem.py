"""Every problem at once, really: the data flow of every step is checked even when the steps' order or the
parameters already have problems (issue 23, point 5)."""

from kale_magic.errors import ValidationError

SIX_MISTAKES = [
    "%%parameters\nn = len('abc')",  # 1. a parameter that is not a literal
    "%%step a\nx = 1",
    "%%step use --after nowhere\ny = x + 2",  # 2. an --after naming no step
    "w = 5",
    "%%step g --after use\nh = w * 3",  # 3. behind that typo, a name defined in a cell that is not annotated
    "%%step d --after a\nv = z * 2",  # 4. a value from a step that does not run before the reader
    "%%step c --after a\nz = 2",
    "%%step e --after a\nimport threading\nlock = threading.Lock()",
    "%%step f --after e\nlocked = lock.locked()",  # 5. a value that cannot move between processes
    "accuracy = 0.9",
    "%%metrics\naccuracy",  # 6. a metric no step produces
]


def test_a_notebook_with_six_mistakes_shows_all_six_in_one_refusal(kernel):
    for cell in SIX_MISTAKES:
        kernel.shell.run_cell(cell)  # some fail in the kernel too (d reads z before c ran): recorded all the same
    error = kernel.error("%kale_run")
    assert isinstance(error, ValidationError)
    text = "\n".join(error.problems)
    expected = ["step 'use' runs --after 'nowhere', but no step of that name was recorded",
                "parameter 'n' must be a literal",
                "step 'g' reads 'w', but it is defined in a cell that is not annotated",
                "step 'd' reads 'z', but it is produced by step 'c', which does not run before 'd'; add --after c",
                "'lock' (a _thread.lock, produced by step 'e') cannot be passed between steps",
                "the %%metrics cell names 'accuracy', but no step produces it"]
    assert [e for e in expected if e not in text] == [] and len(error.problems) == 6, error.problems
    assert error.problems[0].startswith(expected[0]), "the most fundamental first"


def test_a_cycle_does_not_hide_what_the_steps_read(kernel):
    kernel.cells("offset = 2", "%%step a --after b\nx = 1", "%%step b --after a\ny = offset + 1")
    error = kernel.error("%kale_run")
    assert error.problems[0].startswith("the steps a, b depend on each other in a cycle")
    assert any(p.startswith("step 'b' reads 'offset', but it is defined in a cell that is not annotated")
               for p in error.problems[1:]), error.problems
