"""A Jupyter server (``jupyter server``, ``lab`` or ``notebook``) started on 127.0.0.1 for a test.

Started the default way — no ``allow_hidden``, only a token — in a fresh root folder,
with its own config, settings and runtime folders; the extensions enabled in this
environment (kale-magic's among them) load as they would for a user.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_CLASSES = {"server": "ServerApp", "lab": "LabApp", "notebook": "JupyterNotebookApp"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, deadline: float = 90) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"Jupyter exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"Jupyter did not answer {url}")


def serve(tmp_path: Path, app: str = "server"):
    """Yield ``{"url", "token", "dir", "log"}`` of a running Jupyter ``app``; stop it afterwards."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    home = tmp_path / "jupyter"
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    command = [sys.executable, "-m", "jupyter", app, "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
               f"--ServerApp.root_dir={workdir}", "--ServerApp.allow_root=True",
               "--ServerApp.terminals_enabled=False"]
    if app != "server":
        command += ["--no-browser", f"--{APP_CLASSES[app]}.news_url=None"]
    if app == "lab":
        command.append("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    log_path = tmp_path / f"jupyter-{app}.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", process, log_path)
        yield {"url": f"http://127.0.0.1:{port}", "token": token, "dir": workdir, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
