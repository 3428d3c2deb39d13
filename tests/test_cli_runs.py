"""``kale-magic runs`` and ``kale-magic show``: the run store read from a terminal."""

import re

import pytest

from cli_helpers import code, kale_magic, own_stderr, write

pytestmark = pytest.mark.slow  # Jupyter kernels


@pytest.fixture(scope="module")
def recorded_runs(tmp_path_factory):
    """Three recorded runs: two of experiment 'sizes' with different n, one failed run of 'broken'."""
    root = tmp_path_factory.mktemp("runs")
    write(root / "nb.ipynb", code("%load_ext kale_magic"),
          code("%config Kale.stop_on_failure = False  # the cells after the failed run go on"),
          code("%%parameters\nn = 3"),
          code("%%step make\nxs = list(range(n))"),
          code("%%step total\nif n == 0 and '__session__' not in globals():\n"
               "    raise ValueError('nothing to add')\ntotal = sum(xs)"),
          code("%%metrics\ntotal"),
          code("a = %kale_run --experiment sizes"),
          code("b = %kale_run --experiment sizes --param n=10"),
          code("c = %kale_run --experiment broken --param n=0"),
          code("print('ids:', a.id, b.id, c.id)"))
    result = kale_magic("run", "nb.ipynb", "--execute-notebook", cwd=root)
    # the third run fails; the notebook says to go on, so the command succeeds and says so
    assert result.returncode == 0 and "ValueError: nothing to add" in result.stdout
    assert re.fullmatch(r"kale-magic: nb\.ipynb: run \S+ failed \(its error is printed above\); the notebook "
                        r"went on \(Kale\.stop_on_failure = False\)\n", own_stderr(result.stderr)), result.stderr
    ids = next((line for line in result.stdout.splitlines() if line.startswith("[cell 10] ids: ")), None)
    assert ids, result.stdout[-3000:]  # the cells after the failed run ran
    return root, ids.split()[3:]


def test_runs_lists_parameters_and_metrics_side_by_side(recorded_runs):
    root, (a, b, c) = recorded_runs
    result = kale_magic("runs", "--experiment", "sizes", cwd=root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row_a = next(line for line in lines if a in line)
    row_b = next(line for line in lines if b in line)
    assert "3" in row_a.split() and "10" in row_b.split() and "45" in row_b.split()
    assert c not in result.stdout
    assert f"total: {b}" in result.stdout  # the best run per metric


def test_runs_compare_says_what_changed(recorded_runs):
    root, (a, b, _) = recorded_runs
    result = kale_magic("runs", "--compare", a, b, "--dir", root)
    assert result.returncode == 0, result.stderr
    assert "n" in result.stdout and "3" in result.stdout and "10" in result.stdout
    assert "45" in result.stdout


def test_show_prints_one_run_with_its_steps(recorded_runs):
    root, (_, _, c) = recorded_runs
    result = kale_magic("show", c[:-2], "--dir", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Run {c}: failed"
    assert "  pipeline nb, experiment broken, local engine" in lines
    assert "  parameters: n=0" in lines
    assert any(line.split()[:2] == ["make", "succeeded"] for line in lines)
    assert any(line.split()[:2] == ["total", "failed"] and "nothing to add" in line for line in lines)
    files = lines[lines.index("  files:") + 1:]
    run_dir = root / ".kale" / "runs" / c
    assert files == [f"    make   notebook {run_dir / 'executed' / 'make.ipynb'}  log {run_dir / 'logs' / 'make.log'}",
                     f"    total  notebook {run_dir / 'executed' / 'total.ipynb'}  log {run_dir / 'logs' / 'total.log'}"]


def test_unknown_runs_and_empty_folders_are_one_line(recorded_runs, tmp_path):
    root, _ = recorded_runs
    unknown = kale_magic("show", "no-such-run", "--dir", root)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "No run 'no-such-run'" in unknown.stderr
    empty = kale_magic("runs", cwd=tmp_path)
    assert empty.returncode == 1 and empty.stderr.count("\n") == 1
    assert "no runs recorded in ." in empty.stderr
    assert not (tmp_path / ".kale").exists()


def test_snapshot_commands_come_through_the_main_command(recorded_runs):
    root, _ = recorded_runs
    result = kale_magic("snapshot", "list", "--dir", root)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.count(" files ") >= 1  # the runs snapshot the workspace
    assert kale_magic("snapshot", "--dir", root, "list").stdout == result.stdout  # before the subcommand too
    old = kale_magic("snapshot", "--root", root, "list")  # the old spelling still works, and says so
    assert old.stdout == result.stdout and "--root is deprecated; use --dir" in old.stderr
    missing = kale_magic("snapshot", "restore", "nope", root / "restored", "--dir", root)
    assert missing.returncode == 1 and "snapshot 'nope' does not exist" in missing.stderr


def test_version_and_one_spelling_for_the_workspace_folder():
    from kale_magic.cli.commands import build_parser
    from kale_magic.version import __version__

    result = kale_magic("--version")
    assert result.returncode == 0 and result.stdout == f"kale-magic {__version__}\n"
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in ("runs", "show", "cache", "snapshot"):
        flags = {o for a in commands[name]._actions for o in a.option_strings}
        assert "--dir" in flags, name


def test_compile_without_kfp_says_first_how_to_install_it(tmp_path):
    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"), code("%%step a\nx = 1"), code("%%step b\ny = x"))
    script = ("import sys; sys.modules['kfp'] = None\nfrom kale_magic.cli import main\n"
              "sys.exit(main(['compile', 'nb.ipynb']))")
    import subprocess
    import sys

    from cli_helpers import kernel_env

    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=kernel_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    first = done.stderr.splitlines()[0]
    assert first.startswith("kale-magic: compiling a pipeline needs Kubeflow Pipelines' kfp: pip install ")
    assert "[kfp]'" in first and len(done.stderr.splitlines()) == 1


def test_cache_counts_and_clears_the_step_results_but_keeps_the_history(recorded_runs):
    root, (a, _, _) = recorded_runs
    before = kale_magic("cache", "--dir", root)
    assert before.returncode == 0, before.stderr
    assert int(before.stdout.split()[0]) > 0
    cleared = kale_magic("cache", "--clear", "--dir", root)
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert kale_magic("cache", "--dir", root).stdout.startswith("The step cache in ")
    assert "is empty" in kale_magic("cache", "--dir", root).stdout
    assert not (root / ".kale" / "runs" / a / "data").exists()
    assert kale_magic("show", a, "--dir", root).stdout.startswith(f"Run {a}: succeeded")


def test_runs_and_show_print_control_characters_escaped(tmp_path):
    """A parameter value, an experiment name or an error holding escape sequences cannot retitle, recolour
    or erase the terminal that `kale-magic runs` / `show` print to."""
    from kale_magic.history.store import RunRecord, RunStore, StepRecord
    from kale_magic.layout import KaleDir

    evil = "\x1b]0;pwned\x07\x1b[31mred\x1b[2K\rgone"
    kale = KaleDir(tmp_path)
    kale.path.mkdir()
    with RunStore(kale.runs_db) as store:
        for run_id in ("r1", "r2"):
            store.save(RunRecord(run_id, evil, "demo", "local", "failed", 1000.0, 1001.0, error=evil,
                                 parameters={"p": evil, evil: 1}, metrics={evil: 0.5},
                                 steps=[StepRecord("s", "failed", 1.0, message=evil)]))
    for args in (("runs",), ("runs", "--compare", "r1", "r2"), ("show", "r1")):
        result = kale_magic(*args, "--dir", str(tmp_path), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", result.stdout), (args, result.stdout)
        assert "\\x1b]0;pwned\\x07" in result.stdout, (args, result.stdout)
