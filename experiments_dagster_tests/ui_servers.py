"""Start the real Dagster and MLflow web UIs on free 127.0.0.1 ports for tests; stop them by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments_dagster.core.paths import PROJECT_ROOT

BIN = PROJECT_ROOT / ".venv" / "bin"
LOCATION = "experiments_dagster"
REPOSITORY = "__repository__"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A started web server: its URL, process and log file."""

    url: str
    process: subprocess.Popen
    log: Path


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started (by its PID), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextmanager
def started(
    argv: list[str], url: str, ready_path: str, env: Mapping[str, str], log: Path
) -> Iterator[Server]:
    """Run ``argv`` in its own process group until ``url + ready_path`` answers 200, yield, stop it."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + ready_path, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer in 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield Server(url, process, log)
    finally:
        stop(process)


def ui_env(tmp: Path, data_dir: Path, tracking_uri: str) -> dict[str, str]:
    """Environment of a UI on tmp stores: its own DAGSTER_HOME, data and MLflow store."""
    home = tmp / "dagster_home"
    home.mkdir(exist_ok=True)
    return {
        "DAGSTER_HOME": str(home),
        "EXPERIMENTS_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


# How each command serves workspace.yaml's code location (`dg` reads [tool.dg] in pyproject.toml).
COMMANDS = {
    "webserver": [str(BIN / "dagster-webserver"), "-w", "workspace.yaml"],
    "dagster dev": [str(BIN / "dagster"), "dev", "-w", "workspace.yaml"],
    "dg dev": [str(BIN / "dg"), "dev"],
}


@contextmanager
def dagster_webserver(tmp: Path, env: Mapping[str, str], command: str = "webserver") -> Iterator[Server]:
    """The Dagster UI started by ``command`` (daemon included for the ``dev`` ones) on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [*COMMANDS[command], "-h", "127.0.0.1", "-p", str(port)]
    log = tmp / f"{command.replace(' ', '-')}.log"
    with started(argv, url, "/server_info", env, log) as server:
        wait_for_location(url)
        yield server


@contextmanager
def mlflow_ui(tmp: Path, tracking_uri: str) -> Iterator[Server]:
    """``mlflow server`` on the tests' store, on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1"]
    with started(argv, url, "/health", {}, tmp / "mlflow.log") as server:
        yield server


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """POST one GraphQL query to the webserver; its ``data``, or an error with the answer."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        payload = json.loads(answer.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def wait_for_location(url: str, timeout: float = 180) -> None:
    """Wait until the code location has loaded (not loading, no error)."""
    query = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = graphql(url, query)["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            if loaded and loaded["__typename"] == "PythonError":
                raise RuntimeError(f"code location failed to load: {loaded['message']}")
            if loaded:
                return
        time.sleep(1)
    raise RuntimeError(f"code location {LOCATION} did not load in {timeout} s")
