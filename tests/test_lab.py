"""`make lab`: JupyterLab, headless on a free port, with the project's kernel.

The server lists the notebooks through its REST API, offers the ``groupsc`` kernel (the venv's
Python with the MALLOC settings) and the autosave-off override; a kernel started through the
server runs the harness notebook's cells over the kernel websocket, and the notebooks, which
the pipeline owns, are left byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest
import websocket

from groupsc.paths import repo_root

ROOT = repo_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "groupsc"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"127.0.0.1:{port}", token

    def get(self, path: str, method: str = "GET", body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://{self.base}{path}", data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lab")
    port, token = _free_port(), uuid.uuid4().hex
    env = {
        **__import__("os").environ,
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        "--allow-root",
    ]  # fmt: skip (containers and CI run as root)
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Lab(port, token)
    try:
        for _ in range(120):
            try:
                server.get("/api/status")
                break
            except OSError:
                assert proc.poll() is None, (tmp / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_lab_lists_the_notebooks(lab):
    listing = lab.get("/api/contents/notebooks")
    names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
    assert names == [nb.name for nb in NOTEBOOKS]


def test_the_notebooks_name_the_project_kernel_and_lab_offers_it(lab):
    for path in NOTEBOOKS:
        assert nbformat.read(path, 4).metadata.kernelspec.name == KERNEL, path.name
    spec = lab.get("/api/kernelspecs")["kernelspecs"][KERNEL]["spec"]
    assert spec["env"] == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4000000000"}
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()


def test_lab_does_not_autosave(lab):
    """The venv's overrides.json makes autosave's default False (the user's own settings,
    empty here, could turn it back on)."""
    plugin = lab.get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert plugin["schema"]["properties"]["autosave"]["default"] is False
    assert plugin["settings"].get("autosave", False) is False


def _execute(ws, session: str, code: str) -> tuple[str, list[str]]:
    """Run ``code`` on the kernel; (its stdout, its errors)."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "test", "session": session,
              "msg_type": "execute_request", "version": "5.3"}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}  # fmt: skip
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                        "content": content, "channel": "shell", "buffers": []}))  # fmt: skip
    out, errors, replied, idle = [], [], False, False
    while not (replied and idle):  # the reply (shell) and the outputs (iopub) come unordered
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            out.append(msg["content"]["text"])
        elif kind == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        replied |= kind == "execute_reply"
        idle |= kind == "status" and msg["content"]["execution_state"] == "idle"
    return "".join(out), errors


def test_a_kernel_started_by_lab_runs_a_notebook_with_the_project_settings(lab):
    before = {nb: hashlib.sha256(nb.read_bytes()).hexdigest() for nb in NOTEBOOKS}
    kernel = lab.get("/api/kernels", "POST", {"name": KERNEL, "path": "notebooks"})
    url = f"ws://{lab.base}/api/kernels/{kernel['id']}/channels?token={lab.token}"
    ws = websocket.create_connection(url, timeout=300)
    session = uuid.uuid4().hex
    try:
        probe = "import os, sys; print(os.environ['MALLOC_MMAP_MAX_'], sys.prefix, os.getcwd())"
        out, errors = _execute(ws, session, probe)
        assert not errors and out.split()[0] == "0", errors
        assert Path(out.split()[1]).resolve() == Path(sys.prefix).resolve()
        assert Path(out.split()[2]).resolve() == (ROOT / "notebooks").resolve()
        cells = nbformat.read(ROOT / "notebooks" / "00_harness.ipynb", 4).cells
        for cell in (c for c in cells if c.cell_type == "code"):
            _, errors = _execute(ws, session, cell.source)
            assert not errors, f"{errors} in:\n{cell.source[:300]}"
    finally:
        ws.close()
        lab.get(f"/api/kernels/{kernel['id']}", "DELETE")
    assert {nb: hashlib.sha256(nb.read_bytes()).hexdigest() for nb in NOTEBOOKS} == before
