"""A real ipykernel killed with SIGKILL, or interrupted, while a step runs: what survives, what the registry says."""

import os
import secrets
import signal
import subprocess
import sys

import pytest
from jupyter_client.manager import start_new_kernel

from cli_helpers import kale_magic, kernel_env
from kale_magic.history.store import RunStore
from processes import MARK, command, kill_marked, marked, wait_for

pytestmark = pytest.mark.slow  # Jupyter kernels

CELLS = [
    "%load_ext kale_magic",
    "%%parameters\nslow = 0",
    "%%step first\nx = 1",
    # The pipeline's step starts a process of its own, then sleeps; in the kernel (slow = 0) it does neither.
    "%%step wait\nimport subprocess, time\nif slow:\n    subprocess.Popen(['sleep', '300'])\n"
    "time.sleep(slow)\ny = x + 1",
]


class Kernels:
    """ipykernels started with jupyter_client in one folder, each with a marker in its environment."""

    def __init__(self, folder):
        self.folder = folder
        self.started = []
        self.tokens = []

    def start(self, token: str):
        self.tokens.append(token)
        manager, client = start_new_kernel(kernel_name="python3", cwd=str(self.folder),
                                           env={**kernel_env(), MARK: token})
        self.started.append((manager, client))
        for cell in CELLS:
            execute(client, cell)
        return manager, client

    def stop(self):
        for manager, client in self.started:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
        for token in self.tokens:
            kill_marked(token)


@pytest.fixture
def kernels(tmp_path):
    started = Kernels(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def execute(client, code: str, timeout: float = 120) -> str:
    """Run ``code``; return its text output (streams and results); fail with the kernel's error."""
    msg_id = client.execute(code)
    text = []
    while True:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            raise AssertionError(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            reply(client, msg_id)
            return "".join(text)


def reply(client, msg_id: str, timeout: float = 60) -> dict:
    """The shell channel's reply to ``msg_id`` (the replies before it are read and dropped)."""
    while True:
        message = client.get_shell_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") == msg_id:
            return message


def step_process(token: str):
    """The ``sleep 300`` the pipeline's step started, once it runs."""
    return next((pid for pid in marked(token) if command(pid) == ["sleep", "300"]), None)


def test_a_killed_kernel_leaves_no_process_its_run_reads_interrupted_and_resume_runs(kernels):
    token = secrets.token_hex(8)
    _, client = kernels.start(token)
    kernel_pid = int(execute(client, "import os; print(os.getpid())"))
    started = execute(client, "run = %kale_run --background --param slow=120\nprint('\\nid:', run.id)")
    run_id = started.rsplit("\nid: ", 1)[1].strip()
    sleeper = wait_for(lambda: step_process(token), 60)
    assert sleeper, "the step did not start"
    # a process forked from the kernel holds the worker server's stdin open: the server must not wait for EOF
    holder = int(execute(client, "import os, time\npid = os.fork()\nif pid == 0:\n    time.sleep(60)\n"
                                 "    os._exit(0)\nprint(pid)"))
    running = marked(token) - {holder}
    assert {kernel_pid, sleeper} < running and len(running) >= 4  # kernel, worker server, step, its sleep

    os.kill(kernel_pid, signal.SIGKILL)
    try:
        survivors = wait_for(lambda: not (marked(token) - {holder}), 60) or marked(token) - {holder}
        assert survivors is True, f"still running 60 s after the kernel was killed: {survivors}"
    finally:
        os.kill(holder, signal.SIGKILL)

    _, client = kernels.start(secrets.token_hex(8))
    table = execute(client, "%kale_runs")
    short_id = run_id.rsplit("-", 1)[1]  # %kale_runs names a notebook's runs by the random end of their id
    row = next((line for line in table.splitlines() if line.split()[:1] == [short_id]), "")
    assert "interrupted" in row, table
    with RunStore.for_workspace(kernels.folder) as store:
        record = store.get(run_id)
    assert [(s.name, s.status) for s in record.steps] == [("first", "succeeded"), ("wait", "interrupted")]
    assert record.error.startswith("the kernel running it ended") and record.ended is None

    resumed = execute(client, "r = %kale_run --resume\n"
                              "print('\\nresumed:', r.status, r.steps['first'].status, r.steps['first'].cached_from, "
                              "r.steps['wait'].status)")
    assert resumed.rsplit("\nresumed: ", 1)[1].split() == ["succeeded", "cached", run_id, "succeeded"]


def test_ctrl_c_cancels_the_run_and_its_step_says_cancelled(kernels):
    token = secrets.token_hex(8)
    manager, client = kernels.start(token)
    msg_id = client.execute("run = %kale_run --param slow=120")
    sleeper = wait_for(lambda: step_process(token), 60)
    assert sleeper, "the step did not start"
    manager.interrupt_kernel()
    content = reply(client, msg_id)["content"]  # a cancelled run stops the notebook as an interrupted cell does
    assert (content["status"], content["ename"]) == ("error", "RunFailed")
    out = execute(client, "import kale_magic\nrun = kale_magic.last_run()\n"
                          "print(run.status, '|', run.steps['wait'].error, '|', run.state.error)")
    assert out == "failed | step 'wait' was cancelled | the run was cancelled\n"
    assert wait_for(lambda: sleeper not in marked(token), 60), "what the cancelled step started survived it"


def test_kale_magic_runs_marks_a_dead_kernels_run_interrupted(tmp_path):
    """The recording process dies by SIGKILL with its run recorded as running."""
    script = ("import os, signal\nfrom kale_magic.history.store import RunStore\n"
              "from kale_magic.run.state import RunState\n"
              "state = RunState('r1', 'nb', 'Default', 'local', steps=['a'])\n"
              f"RunStore.for_workspace({str(tmp_path)!r}).recorder(state)\n"
              "state.step('a', 'running')\nos.kill(os.getpid(), signal.SIGKILL)")
    done = subprocess.run([sys.executable, "-c", script], env=kernel_env())
    assert done.returncode == -signal.SIGKILL
    result = kale_magic("runs", "--dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "interrupted" in next(line for line in result.stdout.splitlines() if "r1" in line)
