"""`make lab` serves JupyterLab: start the same server command on a free port and GET /lab."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_jupyterlab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), "course-test-token"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--notebook-dir={ROOT / 'notebooks'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, deadline = None, time.time() + 60
        while status is None and time.time() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as resp:
                    status = resp.status
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"JupyterLab did not answer 200 on /lab (exit code {server.poll()})"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/00_setup.ipynb?token={token}") as resp:
            assert resp.status == 200  # it serves the course notebooks
    finally:
        server.terminate()
        server.wait(timeout=20)
