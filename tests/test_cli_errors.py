"""What the command says about files it cannot use, and ``kale-magic convert`` end to end."""

import nbformat
import pytest

from cli_helpers import code, kale_magic, write


def bad_files(tmp_path):
    (tmp_path / "invalid.ipynb").write_text("{ not json")
    (tmp_path / "list.ipynb").write_text("[1, 2]")
    (tmp_path / "binary.ipynb").write_bytes(b"\x89PNG\x00\xff")
    (tmp_path / "dir.ipynb").mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.metadata["kernelspec"] = {"name": "ir", "language": "R", "display_name": "R"}
    nbformat.write(nb, str(tmp_path / "r.ipynb"))


@pytest.mark.parametrize("command", ["convert", "run", "compile"])
@pytest.mark.parametrize("name, message", [
    ("missing.ipynb", "no such file"),
    ("invalid.ipynb", "invalid JSON"),
    ("list.ipynb", "not a Jupyter notebook"),
    ("binary.ipynb", "not UTF-8"),
    ("dir.ipynb", "is a directory"),
    ("r.ipynb", "a r notebook; kale-magic runs Python notebooks"),
])
def test_unusable_files_give_one_line_and_a_failing_status(tmp_path, command, name, message, capsys, monkeypatch):
    bad_files(tmp_path)
    if name == "invalid.ipynb":  # each command once as a real process; the other files in this one
        result = kale_magic(command, tmp_path / name, cwd=tmp_path)
        status, stderr = result.returncode, result.stderr
    else:
        monkeypatch.chdir(tmp_path)
        status, stderr = in_process(capsys, command, tmp_path / name)
    assert status == 1
    assert message in stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert stderr.startswith("kale-magic: ")


def in_process(capsys, *args):
    """The exit status and stderr of ``kale-magic ARGS`` run by its entry point in this process (an
    exception it lets through fails the test, as its traceback would in a real process)."""
    from kale_magic.cli import main

    capsys.readouterr()
    status = main([str(arg) for arg in args])
    return status, capsys.readouterr().err


def test_convert_writes_the_converted_notebook_and_reports_notes(tmp_path):
    source = write(tmp_path / "kale.ipynb",
                   code("import os", "imports"),
                   code("x = 1", "step:first", "owner:me"),
                   code("y = x + 1", "step:second", "prev:first"),
                   kubeflow_notebook={"experiment_name": "exp", "pipeline_name": "pipe"})
    result = kale_magic("convert", source, "-o", tmp_path / "out.ipynb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    assert "cell 2: tag 'owner:me' has no kale-magic equivalent" in result.stderr
    out = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert [c.source for c in out.cells] == [
        "%load_ext kale_magic", "%%imports\nimport os", "%%step first\nx = 1",
        "%%step second --after first\ny = x + 1", "run = %kale_run --experiment exp --pipeline pipe"]


def test_convert_writes_next_to_the_input_by_default(tmp_path):
    source = write(tmp_path / "kale.ipynb", code("x = 1", "step:a"))
    result = kale_magic("convert", source, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = nbformat.read(str(tmp_path / "kale.magic.ipynb"), as_version=4)
    assert out.cells[1].source == "%%step a\nx = 1"


def test_convert_refuses_what_kale_refuses_in_one_line(tmp_path):
    source = write(tmp_path / "kale.ipynb", code("x = 1", "step:b", "prev:a"))
    result = kale_magic("convert", source, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == ("kale-magic: Cell 1 (step 'b') has tag prev:a but no step 'a' is "
                             "defined above it; tag that step's cells first or fix the name.\n")
    assert not (tmp_path / "kale.magic.ipynb").exists()


def test_unwritable_output_is_one_line(tmp_path):
    source = write(tmp_path / "kale.ipynb", code("x = 1", "step:a"))
    result = kale_magic("convert", source, "-o", tmp_path / "no" / "such" / "dir.ipynb")
    assert result.returncode == 1
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_exit_2_like_any_argparse_tool(tmp_path):
    result = kale_magic("frobnicate", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
