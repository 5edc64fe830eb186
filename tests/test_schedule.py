"""`modhifi serve` registers the nightly deployment on a real local Prefect server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from pipeline_workspace import isolated_env, make_workspace, modhifi


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_serve_registers_the_nightly_schedule(tmp_path):
    root = make_workspace(tmp_path / "ws")
    env = isolated_env(tmp_path)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    serve = None
    try:
        _wait_for(lambda: _get(f"{api}/health"), 120, "the Prefect server")
        serve = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--workspace", str(root)],
            cwd=root,
            env={**env, "PREFECT_API_URL": api},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deployments = _wait_for(lambda: _get(f"{api}/deployments/filter", {}), 120, "the deployment")
        nightly = next(d for d in deployments if d["name"] == "nightly")
        assert nightly["parameters"]["root"] == str(root)
        crons = [s["schedule"]["cron"] for s in nightly["schedules"]]
        assert crons == ["0 2 * * *"]
        assert nightly["schedules"][0]["schedule"]["timezone"] == "UTC"
    finally:
        for process in (serve, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    root = make_workspace(tmp_path / "ws")
    env = {k: v for k, v in isolated_env(tmp_path).items() if k != "PREFECT_API_URL"}
    result = modhifi(root, env, "serve", "--workspace", str(root))
    assert result.returncode == 2
    assert "prefect server start" in result.stderr
