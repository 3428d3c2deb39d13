"""``%%step --env`` and ``--secret``: variables in the step's process (local) or container (KFP); a secret's
value never reaches a file the run writes, the compiled YAML, the run store or the panel."""

from __future__ import annotations

import hashlib
import secrets as random
from pathlib import Path

import pytest
import yaml
from IPython.core.error import UsageError

from kale_magic.step.environment import SecretRef, read_dotenv

DIGEST = ("%%step use --secret api-token:token=API_TOKEN\nimport hashlib, os\n"
          "digest = hashlib.sha256(os.environ.get('API_TOKEN', '').encode()).hexdigest()")


def options(kernel):
    return kernel.magics.session.ordered()[-1].options


def files_containing(folder: Path, needle: str) -> list[Path]:
    """Every file under ``folder`` whose bytes hold ``needle`` (the run store and logs included)."""
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_env_and_secret_options_are_parsed(kernel):
    kernel.run("%%step a --env MODE=fast,N=3 --env URL=http://x/?a=b --secret openai --secret db:pass=DB_PASS\nx = 1")
    o = options(kernel)
    assert o.env == (("MODE", "fast"), ("N", "3"), ("URL", "http://x/?a=b"))
    assert o.secrets == (SecretRef("openai", "openai", "openai"), SecretRef("db", "pass", "DB_PASS"))


@pytest.mark.parametrize("line, message", [
    ("--env 1A=3", "%%step a: --env 1A=3: write KEY=VALUE"),
    ("--env MODE", "%%step a: --env MODE: write KEY=VALUE"),
    ("--secret Bad_Name", "%%step a: --secret Bad_Name: NAME must be a Kubernetes Secret name"),
    ("--secret api-token", "name the variable: --secret api-token:api-token=ENVVAR"),
    ("--env TOKEN=x --secret t:k=TOKEN", "TOKEN is set both by --env and by --secret"),
])
def test_bad_env_or_secret_is_one_sentence_and_the_cell_does_not_run(kernel, line, message):
    error = kernel.error(f"%%step a {line}\nx = 1")
    assert isinstance(error, UsageError) and message in str(error), str(error)
    assert "x" not in kernel.ns


@pytest.mark.parametrize("line", ["%%step a --sec t:k=V\nx = 1", "%%step a --no-c\nx = 1",
                                  "%%step a --en A=1\nx = 1"])
def test_options_match_exactly(kernel, line):
    error = kernel.error(line)
    assert isinstance(error, UsageError) and "unrecognized arguments" in str(error)


def test_env_variables_are_set_in_the_step_process_and_key_the_cache(kernel):
    kernel.cells("%%step a --env MODE=fast\nimport os\nmode = os.environ.get('MODE', 'unset')",
                 "%%step b\nseen = mode")
    assert kernel.ns["mode"] == "unset"  # the kernel ran the cell without it
    run = kernel.run("%kale_run")
    assert run.load("seen") == "fast"
    again = kernel.run("%kale_run")
    assert again.steps["a"].status == "cached"
    kernel.run("%%step a --env MODE=slow\nimport os\nmode = os.environ.get('MODE', 'unset')")
    changed = kernel.run("%kale_run")
    assert changed.steps["a"].status == "succeeded" and changed.load("seen") == "slow"


def test_a_secret_from_the_kernel_environment_reaches_the_step_and_no_file(kernel, monkeypatch, tmp_path, capsys):
    token = "tok-" + random.token_hex(16)
    monkeypatch.setenv("API_TOKEN", token)
    kernel.run("%config Kale.panel = 'text'")
    kernel.cells(DIGEST, "%%step after\nsame = digest")
    run = kernel.run("%kale_run")
    assert run.status == "succeeded"
    assert run.load("digest") == hashlib.sha256(token.encode()).hexdigest() == kernel.ns["digest"]  # the oracle
    assert "secrets API_TOKEN from the kernel's environment" in run.state.tasks["Compile"].message
    shown = capsys.readouterr()
    assert token not in shown.out + shown.err + repr(run) + repr(run.state.snapshot())
    assert files_containing(tmp_path, token) == []
    kernel.run("%kale_runs")
    assert token not in capsys.readouterr().out


def test_a_secret_from_the_dotenv_beside_the_notebook_is_never_snapshotted(kernel, monkeypatch, tmp_path):
    token = "dot-" + random.token_hex(16)
    monkeypatch.delenv("API_TOKEN", raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"# local secrets\nexport OTHER='x'\nAPI_TOKEN=\"{token}\"\n")
    kernel.cells(DIGEST)
    run = kernel.run("%kale_run")
    assert run.load("digest") == hashlib.sha256(token.encode()).hexdigest()
    assert f"secrets API_TOKEN from {dotenv}" in run.state.tasks["Compile"].message
    assert files_containing(tmp_path, token) == [dotenv]  # the user's own file only: no snapshot holds it


def test_a_missing_secret_refuses_the_run_before_any_step_runs(kernel, monkeypatch, tmp_path):
    monkeypatch.delenv("API_TOKEN", raising=False)
    kernel.cells("%%step first\nx = 1", DIGEST)
    run = kernel.kale_run()
    assert run.status == "failed"
    compile_task = run.state.tasks["Compile"]
    assert compile_task.status == "failed"
    assert compile_task.message == (
        f"step 'use' needs secret api-token (key token) as API_TOKEN, which is neither in the kernel's environment "
        f"nor in {tmp_path / '.env'}: add the line API_TOKEN=... to that file (or set the variable before "
        "starting Jupyter).")
    assert {s.status for s in run.steps.values()} == {"pending"}
    assert not (run.run_dir / "executed").exists()


def test_kfp_yaml_sets_env_and_mounts_the_secret_by_reference(kernel, monkeypatch, tmp_path):
    token = "kfp-" + random.token_hex(16)
    monkeypatch.setenv("API_TOKEN", token)
    kernel.cells("%%step load --env MODE=fast\nx = 1", DIGEST)
    run = kernel.run("%kale_run --engine kfp --host http://127.0.0.1:9 --compile-only")
    docs = list(yaml.safe_load_all(run.pipeline_file.read_text()))
    executors = docs[0]["deploymentSpec"]["executors"]
    assert {"name": "MODE", "value": "fast"} in executors["exec-load"]["container"]["env"]
    assert "MODE" not in str(executors["exec-use"]["container"].get("env"))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (mounted,) = platform["exec-use"]["secretAsEnv"]
    assert mounted["keyToEnv"] == [{"envVar": "API_TOKEN", "secretKey": "token"}]
    assert mounted.get("secretName", mounted.get("secretNameParameter")) in ("api-token", {"runtimeValue": {
        "constant": "api-token"}})
    assert "exec-load" not in platform or "secretAsEnv" not in platform["exec-load"]
    assert files_containing(tmp_path, token) == []


def test_dotenv_reading_follows_docker_and_dotenv():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ".env"
        path.write_text("A=1\n# c\nexport B='two words'\nC=x # note\nD=\"a=b\"\nnot a pair\n")
        assert read_dotenv(path) == {"A": "1", "B": "two words", "C": "x", "D": "a=b"}
        assert read_dotenv(Path(folder) / "absent") == {}


@pytest.mark.slow  # kale-magic compile in a subprocess
def test_kale_magic_compile_reads_env_and_secret_from_the_cell_sources(tmp_path):
    from cli_helpers import code, kale_magic, write

    write(tmp_path / "nb.ipynb", code("%load_ext kale_magic"),
          code("%%step fetch --env REGION=eu --secret db:password=DB_PASSWORD\nrows = [1, 2]"),
          code("%%step total\ntotal = sum(rows)"))
    result = kale_magic("compile", "nb.ipynb", "-o", "pipe.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all((tmp_path / "pipe.yaml").read_text()))
    assert {"name": "REGION", "value": "eu"} in docs[0]["deploymentSpec"]["executors"]["exec-fetch"]["container"]["env"]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert platform["exec-fetch"]["secretAsEnv"][0]["keyToEnv"] == [{"envVar": "DB_PASSWORD", "secretKey": "password"}]
    assert "secretAsEnv" not in platform.get("exec-total", {})
