"""Faults with real processes: output floods, absurd options, what steps start, killed writers, full disks."""

import os
import re
import secrets
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from nbformat.v4 import new_code_cell, new_notebook

from cli_helpers import code, kale_magic, write
from kale_magic.errors import MarshalError, ValidationError
from kale_magic.source.convert import convert
from kale_magic.source.static import read_annotations
from kale_magic.history.owner import Owner
from kale_magic.history.store import RunStore
from kale_magic.step.capture import DISPLAY_MAX, EXCERPT
from processes import kill_marked, marked, wait_for


def run(kernel, line="--no-snapshot"):
    return kernel.kale_run(line)


def step_outputs(result, step):
    nb = nbformat.read(str(result.notebook(step)), as_version=4)
    return next(c for c in nb.cells if c.metadata["kale"]["role"] == "step").outputs


# output -----------------------------------------------------------------------------------------

FLOOD = """\
%%step flood --timeout 240
import sys
line = 'x' * 99
print('first line')
for _ in range(mb * 10_000):
    print(line)
print('last line')
print('to stderr', file=sys.stderr)"""


@pytest.mark.slow  # big data: 50 MB through a step's output
def test_a_step_printing_50_mb_completes_its_log_keeps_all_and_its_notebook_an_excerpt(kernel):
    kernel.cells("%%parameters\nmb = 0", FLOOD)
    result = run(kernel, "--no-snapshot --param mb=50")
    assert result.status == "succeeded", result.state.error
    log = result.run_dir / "logs" / "flood.log"
    assert log.stat().st_size == len("first line\n") + 500_000 * 100 + len("last line\nto stderr\n")
    with open(log, "rb") as f:
        assert f.read(111) == b"first line\n" + b"x" * 99 + b"\n"
        f.seek(-120, os.SEEK_END)
        assert f.read() == b"x" * 99 + b"\nlast line\nto stderr\n"
    stdout, stderr = step_outputs(result, "flood")
    assert (stdout.name, stderr.name, stderr.text) == ("stdout", "stderr", "to stderr\n")
    head, marker, tail = stdout.text.partition("[... ")
    assert head.startswith("first line\n") and len(head) <= EXCERPT and head.endswith("x\n")
    left_out = int(marker and tail.split(" characters", 1)[0].replace(",", ""))
    assert tail.split("\n", 1)[0].endswith("characters of output left out here; the step's log has all of it ...]")
    kept = tail.split("\n", 1)[1]
    assert kept.endswith("x\nlast line\n") and len(kept) <= EXCERPT and set(kept[:-10]) == {"x", "\n"}
    assert len(head) + left_out + len(kept) == log.stat().st_size - len("to stderr\n")
    assert result.notebook("flood").stat().st_size < 4 * EXCERPT


def test_text_displays_and_errors_keep_their_order_in_notebook_and_log(kernel):
    kernel.run("%%imports\nimport sys\nfrom IPython.display import HTML, display")
    kernel.error("%%step order\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n"
                 "display(HTML('<i>d</i>'))\nprint('e')\nraise ValueError('f')")
    result = run(kernel)
    outputs = step_outputs(result, "order")
    assert [(o.output_type, o.get("name"), o.get("text") or o.get("evalue") or o.data["text/html"])
            for o in outputs] == [("stream", "stdout", "a\n"), ("stream", "stderr", "b\n"),
                                  ("stream", "stdout", "c\n"), ("display_data", None, "<i>d</i>"),
                                  ("stream", "stdout", "e\n"), ("error", None, "f")]
    log = (result.run_dir / "logs" / "order.log").read_text()
    assert log.startswith("a\nb\nc\n<IPython.core.display.HTML object>\ne\n") and "ValueError: f" in log


def test_displays_beyond_what_a_notebook_keeps_are_counted_not_kept(kernel):
    """Thirty 1 MB figures: the notebook keeps DISPLAY_MAX characters of them and says how many it left
    out; their text is all in the log.  Cleared outputs give their room back, so an animation's last
    frame is kept however many came before it."""
    kernel.run("%%imports\nfrom IPython.display import clear_output, display")
    kernel.run("%%step figures\nfor i in range(30):\n    display({'image/png': 'A' * 1_000_000, "
               "'text/plain': f'<Figure {i}>'}, raw=True)\nprint('done')")
    kernel.run("%%step animate --after ''\nfor i in range(60):\n    clear_output(wait=True)\n"
               "    display({'image/png': 'B' * 1_000_000, 'text/plain': f'<Frame {i}>'}, raw=True)")
    result = run(kernel)
    assert result.status == "succeeded", result.state.error
    outputs = step_outputs(result, "figures")
    kept = [o for o in outputs if "image/png" in o.get("data", {})]
    assert sum(len(o.data["image/png"]) + len(o.data["text/plain"]) for o in kept) <= DISPLAY_MAX
    assert [o.data["text/plain"] for o in kept] == [f"<Figure {i}>" for i in range(len(kept))]
    marker = outputs[len(kept)].data["text/plain"]
    assert marker.startswith(f"[... {30 - len(kept)} display output(s) of ") and "left out here" in marker
    assert outputs[-1].text == "done\n" and len(outputs) == len(kept) + 2
    log = (result.run_dir / "logs" / "figures.log").read_text()
    assert log == "".join(f"<Figure {i}>\n" for i in range(30)) + "done\n"
    assert result.notebook("figures").stat().st_size < DISPLAY_MAX + 100_000
    assert [o.data["text/plain"] for o in step_outputs(result, "animate")] == ["<Frame 59>"]


def test_the_log_reads_live_while_the_step_runs(kernel, tmp_path):
    """The step holds until the test has read its log, so the read cannot race the step's end."""
    gate = tmp_path / "go"
    kernel.cells("%%parameters\ngate = ''", "%%step slow\nimport os, time\nprint('started')\n"
                 "while gate and not os.path.exists(gate):\n    time.sleep(0.02)")
    result = run(kernel, f"--no-snapshot --background --param gate={gate}")
    log = result.run_dir / "logs" / "slow.log"
    try:
        assert wait_for(lambda: log.exists() and log.read_text() == "started\n", 60)
        assert result.state.steps["slow"].status == "running"
    finally:
        gate.touch()
    assert result.wait(120).status == "succeeded"


# options ------------------------------------------------------------------------------------------

ABSURD = [
    ("--timeout 100000000000000000000", "--timeout 100000000000000000000: give a whole number of seconds from 1 "
                                        "to 2,592,000 (30 days); leave --timeout out for no limit."),
    ("--timeout -5", "--timeout -5: give a whole number of seconds"),
    ("--timeout 0", "--timeout 0: give a whole number of seconds from 1"),
    ("--timeout 1.5", "--timeout 1.5: give a whole number of seconds"),
    ("--retries -1", "--retries -1: give a whole number of retries from 0 to 100."),
    ("--retries 1000", "--retries 1000: give a whole number of retries from 0 to 100."),
    ("--memory banana", "--memory banana: give a Kubernetes memory quantity above 0, such as 512Mi, 2Gi or 1G."),
    ("--memory 1.5Gi", "--memory 1.5Gi: give a Kubernetes memory quantity"),
    ("--cpu -3", "--cpu -3: give a Kubernetes CPU quantity above 0, such as 500m, 1 or 2.5."),
    ("--cpu 0", "--cpu 0: give a Kubernetes CPU quantity above 0"),
    ("--gpu -2", "--gpu -2: give a whole number of GPUs, 0 or more."),
    ("--image 'not an image'", "--image not an image: give a container image reference"),
    ("--image Python:3.11", "--image Python:3.11: give a container image reference"),
]


@pytest.mark.parametrize("option, message", ABSURD)
def test_an_absurd_step_option_is_one_sentence_and_nothing_is_recorded(kernel, option, message):
    error = kernel.error(f"%%step train {option}\nx = 1")
    assert type(error) is UsageError  # IPython shows a plain UsageError without a traceback
    assert str(error).startswith(f"%%step train: {message}") and "\n" not in str(error)
    assert kernel.magics.session.cells == {} and "x" not in kernel.ns  # the cell did not even run


@pytest.mark.parametrize("option, message", ABSURD)
def test_compile_applies_the_same_checks(option, message):
    nb = new_notebook(cells=[new_code_cell("%load_ext kale_magic"), new_code_cell(f"%%step train {option}\nx = 1")])
    with pytest.raises(ValidationError) as error:
        read_annotations(nb)
    assert str(error.value).startswith(f"cell 2: %%step train: {message}")


def test_sane_options_are_kept_with_their_types(kernel):
    digest = "sha256:" + "0" * 64
    kernel.run(f"%%step train --cpu 500m --memory 2Gi --gpu 1 --retries 3 --timeout 3600 "
               f"--image registry.example.com:5000/team/img:1.0@{digest}\nx = 1")
    options = next(iter(kernel.magics.session.cells.values())).options
    assert (options.cpu, options.memory, options.gpu, options.retries, options.timeout, options.image) == (
        "500m", "2Gi", 1, 3, 3600, f"registry.example.com:5000/team/img:1.0@{digest}")


def test_the_command_line_says_it_in_one_line(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%step train --retries -1\nx = 1"))
    result = kale_magic("compile", "nb.ipynb", cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / ".kale").exists()
    assert result.stderr == ("kale-magic: cell 2: %%step train: --retries -1: give a whole number of retries "
                             "from 0 to 100.\n")


@pytest.mark.parametrize("tag, message", [
    ("limit:memory:banana", "give a Kubernetes memory quantity"),
    ("limit:cpu:0", "give a Kubernetes CPU quantity"),
    ("limit:nvidia.com/gpu:1.5", "give a whole number of GPUs"),
    ("image:Not An Image", "give a container image reference"),
])
def test_kale_tags_go_through_the_same_checks(tag, message):
    nb = new_notebook(cells=[code("x = 1", "step:train", tag)])
    with pytest.raises(ValidationError, match=f"^Cell 1: tag '{tag}': {message}"):
        convert(nb)


def test_kale_steps_defaults_go_through_the_same_checks():
    nb = new_notebook(cells=[code("x = 1", "step:train")],
                      metadata={"kubeflow_notebook": {"steps_defaults": ["limit:memory:lots"]}})
    with pytest.raises(ValidationError, match="^Notebook metadata: steps_defaults entry 'limit:memory:lots': give"):
        convert(nb)


def test_config_values_are_checked_in_the_kernel_and_by_compile(kernel, caplog):
    kernel.run("%config Kale.max_parallel = 0")
    kernel.run("%config Kale.base_image = 'My Image'")
    kernel.run("%config Kale.preload = ['pandas', 'no such module']")
    assert (kernel.magics.max_parallel, kernel.magics.base_image, kernel.magics.preload) == (8, "python:3.11", [])
    assert [r.getMessage() for r in caplog.records] == [
        "Kale.max_parallel = 0: give a number of steps from 1 to 256.",
        "Kale.base_image = 'My Image': give a container image reference, such as python:3.11 or "
        "registry.example.com/team/image:tag (lowercase repository, no spaces).",
        "Kale.preload: 'no such module' is not a module name; list importable modules, e.g. "
        "['pandas', 'sklearn.linear_model']."]
    nb = new_notebook(cells=[new_code_cell("%config Kale.max_parallel = -1")])
    with pytest.raises(ValidationError, match=r"^cell 1: Kale.max_parallel = -1: give a number of steps"):
        read_annotations(nb)



@pytest.mark.slow  # kale-magic compile in a subprocess, twice
def test_the_notebook_file_is_read_with_the_engines_settings_by_their_own_names(tmp_path):
    """``%config Kfp.NAME`` lines apply headless as in the kernel (the old ``Kale.NAME`` too); other classes'
    lines are the kernel's and are left alone; a bad Kfp value is refused like a bad Kale one."""
    nb = new_notebook(cells=[new_code_cell("%config Kfp.caching = False\n%config Kale.max_parallel = 3\n"
                                           "%config InlineBackend.figure_format = 'retina'")])
    assert read_annotations(nb).config == {"Kfp.caching": False, "max_parallel": 3}
    nb = new_notebook(cells=[new_code_cell("%config Kfp.base_image = 'My Image'")])
    with pytest.raises(ValidationError, match=r"^cell 1: .*base_image.*give a container image reference"):
        read_annotations(nb)
    for name, lines in (("off", [code("%config Kfp.caching = False")]), ("on", [])):
        write(tmp_path / f"{name}.ipynb", code("%load_ext kale_magic"), *lines, code("%%step only\nanswer = 42"))
        result = kale_magic("compile", f"{name}.ipynb", "--output", f"{name}.yaml", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    # KFP's cache is turned off in the tasks of the notebook that says so, and only there
    assert "cachingOptions: {}" in (tmp_path / "off.yaml").read_text()
    assert "cachingOptions: {}" not in (tmp_path / "on.yaml").read_text()

# processes ------------------------------------------------------------------------------------------

def test_what_a_step_starts_ends_when_the_step_ends(kernel):
    token = secrets.token_hex(8)
    kernel.cells("%%parameters\ntoken = ''",
                 "%%step spawn\nimport os, subprocess\nos.environ['KALE_TEST_MARK'] = token\n"
                 "subprocess.Popen(['sleep', '300']) if token else None\n"
                 "get_ipython().system('sh -c \"sleep 301 &\"') if token else None\nstarted = bool(token)")
    result = run(kernel, f"--no-snapshot --param token={token}")
    try:
        assert result.status == "succeeded" and result.load("started") is True
        assert wait_for(lambda: not marked(token), 60) is True, "processes the step started outlived it"
    finally:
        kill_marked(token)


# killed writers and full disks ----------------------------------------------------------------

KILLED_WRITER = [
    "%%functions\nclass Dies:\n    def __reduce__(self):\n        import os, signal\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n",
    "%%step make\nbig = list(range(1000))",
    "%%step use\nn = len(big)",
]


def run_a_killed_writer(kernel):
    """A run whose step is killed while it saves ``big``: its hidden temporary folder stays behind."""
    kernel.cells(*KILLED_WRITER)
    cell = next(c for c in kernel.magics.session.cells.values() if c.step == "make")
    kernel.magics.session.record(replace(cell, source="big = list(range(500_000)) + [Dies()]"))
    result = run(kernel)
    assert result.status == "failed" and "was killed (SIGKILL)" in result.steps["make"].error
    left = [p for p in (result.run_dir / "data" / "make").iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".big.") and left[0].name.endswith(".tmp")
    kernel.magics.session.record(cell)
    return result, left[0]


def test_a_killed_writers_temporary_folder_is_swept_by_the_next_run(kernel):
    failed, leftover = run_a_killed_writer(kernel)
    assert run(kernel).status == "succeeded"
    assert not leftover.exists() and (failed.run_dir / "data").is_dir()


def test_kale_cache_clear_sweeps_it_too(kernel, capsys):
    failed, leftover = run_a_killed_writer(kernel)
    capsys.readouterr()
    kernel.shell.run_line_magic("kale_cache", "--clear --older-than 365")
    assert not leftover.exists()
    assert "and 1 temporary files of killed writers, freed" in capsys.readouterr().out


def test_a_running_runs_temporary_files_are_left_alone(kernel, tmp_path):
    failed, leftover = run_a_killed_writer(kernel)
    with RunStore.for_workspace(tmp_path) as store:  # as if this process, alive, were still running it
        store.save(replace(store.get(failed.id), status="running", owner=Owner.current().as_dict()))
    assert run(kernel).status == "succeeded"
    assert leftover.exists()


def test_a_full_disk_says_so_and_how_much_was_needed(kernel, tiny_disk, monkeypatch):
    monkeypatch.chdir(tiny_disk)
    kernel.cells("%%imports\nimport numpy as np", "%%step make\nbig = np.zeros(500_000)", "%%step use\nn = len(big)")
    result = run(kernel)
    assert result.status == "failed"
    folder = tiny_disk / ".kale" / "runs" / result.id / "data" / "make"
    assert re.fullmatch(rf"Could not save 'big': the disk holding {re.escape(str(folder))} is full \(the value "
                        r"needs about 3\.8 MiB; [\d.]+ \w+ is free\); free some space there and run the step again",
                        result.steps["make"].error)
    assert list(folder.iterdir()) == []


def test_a_full_disk_without_a_known_size_says_what_was_written(tiny_disk):
    from kale_magic import marshal

    with pytest.raises(MarshalError, match=r"^Could not save 'items': the disk holding .* is full \(the value needs "
                                           r"more than the [\d.]+ MiB written before it filled; [\d.]+ \w+ is free\)"):
        marshal.save([str(i) for i in range(600_000)], tiny_disk / "items", name="items")
    assert os.listdir(tiny_disk) == []
