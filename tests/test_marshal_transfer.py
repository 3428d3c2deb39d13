"""Big arrays between real pipeline steps, on the local engine and under kfp.local.

A consumer gets a plain ndarray mapped copy-on-write from the producer's file:
its writes stay in its own process.  A file damaged between two steps (here by
a step in between, as a failing disk or a stray process would) is refused
before the consumer's code runs, with one sentence naming the value, the
producer and the fix.
"""

import json

import numpy as np
import pytest
from test_kfp_containers import compile_for_test, kfp_local, outputs  # noqa: F401 (kfp_local is a fixture)

from kale_magic import marshal
from kale_magic.errors import RunFailed
from kale_magic.marshal import numpy_backend

N = 2 * numpy_backend.MAP_FROM_BYTES // 8  # float64 elements: large enough to be mapped
EXPECTED = float(np.arange(N, dtype=np.float64).sum())

WRITING_CONSUMER = [
    "%%imports\nimport numpy as np",
    f"%%step make\narr = np.arange({N}, dtype=np.float64)",
    # writes through an alias into the array it loaded: the analysis sees `view` change, not `arr`, so
    # `check` takes `arr` from `make` (in the kernel, where nothing is isolated, it would see the -1s)
    "%%step scribble --after make\nview = arr\nview[:] = -1.0\n"
    "scribbled = (type(arr).__name__, float(view.sum()))",
    "%%step check --after scribble\nchecked = (type(arr).__name__, float(arr.sum()), scribbled)",
]


def damaging(how: str, marker) -> list[str]:
    """A step between producer and consumer damages the producer's saved file in place."""
    if how == "truncated":
        harm = "os.truncate(path, os.path.getsize(path) - 100)"
    else:
        harm = ("f = open(path, 'r+b'); f.seek(os.path.getsize(path) // 2); b = f.read(1)\n"
                "f.seek(os.path.getsize(path) // 2); f.write(bytes([b[0] ^ 1])); f.close()")
    return [
        "%%imports\nimport os\nimport numpy as np\nfrom kale_magic.step.runtime import StepContext",
        f"%%step make\narr = np.arange({N}, dtype=np.float64)",
        "%%step harm --after make\nsize = arr.size\ntry:\n"
        "    path = os.path.join(StepContext.current().inputs['arr'], 'array.npy')\n"
        "except RuntimeError:  # recorded in the kernel: no saved file\n    path = None\n"
        "if path:\n" + "\n".join("    " + line for line in harm.splitlines()),
        f"%%step use --after harm\nopen({str(marker)!r}, 'w').close()\ntotal = float(arr.sum()) + size",
    ]


def record_damaging(kernel, how, marker):
    kernel.cells(*damaging(how, marker))
    marker.unlink()  # recording the cells ran them in the kernel


def run(kernel, line=""):
    return kernel.shell.run_line_magic("kale_run", line)


def test_a_consumers_writes_reach_neither_the_file_nor_the_next_step(kernel):
    kernel.cells(*WRITING_CONSUMER)
    result = run(kernel, "--no-cache")
    assert result.status == "succeeded", result.state.error
    assert result.load("scribbled") == ("ndarray", -float(N))
    assert result.load("checked") == ("ndarray", EXPECTED, ("ndarray", -float(N)))
    saved = result.load("arr", step="make")
    assert type(saved) is np.ndarray
    np.testing.assert_array_equal(saved, np.arange(N, dtype=np.float64))
    folder = result.files.value("make", "arr")
    record = json.loads((folder / "kale.json").read_text())
    assert marshal.hashing.file_digest(folder / "array.npy")[1] == \
        marshal.hashing.digest_of(record["files"]["array.npy"])


@pytest.mark.parametrize("how, reason", [("truncated", "truncated"), ("bit-flipped", "checksum")])
def test_a_damaged_value_fails_the_consumer_before_its_code_runs(kernel, tmp_path, how, reason):
    marker = tmp_path / "use-ran"
    record_damaging(kernel, how, marker)
    with pytest.raises(RunFailed) as failed:
        run(kernel, "--no-cache")
    result = failed.value.run
    assert result.steps["make"].status == "succeeded" and result.steps["harm"].status == "succeeded"
    assert result.steps["use"].status == "failed"
    error = result.steps["use"].error
    assert error.startswith("Value 'arr' from step 'make' is corrupted (array.npy in ")
    assert reason in error and error.endswith("run step 'make' again to save it")
    assert "\n" not in error and "Traceback" not in error
    assert not marker.exists()


def kfp_run(kernel, tmp_path):
    """Compile what the kernel recorded and run it under kfp.local, in real containers."""
    from kfp import components

    path = compile_for_test(kernel.magics.plan(), tmp_path / "pipeline.yaml")
    components.load_component_from_file(str(path))()


def test_under_kfp_local_a_consumers_writes_stay_private(kernel, kfp_local, tmp_path):  # noqa: F811
    kernel.cells(*WRITING_CONSUMER)
    kfp_run(kernel, tmp_path)
    assert marshal.load(outputs(kfp_local, "check", "checked")) == ("ndarray", EXPECTED, ("ndarray", -float(N)))
    np.testing.assert_array_equal(marshal.load(outputs(kfp_local, "make", "arr")), np.arange(N, dtype=np.float64))


@pytest.mark.parametrize("how, reason", [("truncated", "truncated"), ("bit-flipped", "checksum")])
def test_under_kfp_local_a_damaged_value_fails_the_task(kernel, kfp_local, tmp_path, capfd, how,  # noqa: F811
                                                        reason):
    marker = tmp_path / "use-ran"
    record_damaging(kernel, how, marker)
    with pytest.raises(RuntimeError, match="use"):
        kfp_run(kernel, tmp_path)
    logs = "".join(capfd.readouterr())
    assert "step 'use' failed: Value 'arr' from step 'make' is corrupted (array.npy in " in logs
    assert reason in logs
    assert not marker.exists()
