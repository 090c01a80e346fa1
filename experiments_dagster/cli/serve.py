"""``experiments-dagster serve --dataset D [--port P]``: a dataset's champion behind MLflow's own
scoring server (``mlflow models serve``), on 127.0.0.1, from this project's environment."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from experiments_dagster.core import paths
from experiments_dagster.core.errors import UsageError
from experiments_dagster.tracking.server import answering_client

DEFAULT_PORT = 5001  # 5000 is `make mlflow-ui`'s
HOST = "127.0.0.1"
STOP_SECONDS = 10  # how long the server gets to exit after SIGTERM before it is killed


def add_parser(sub: Any) -> None:
    """Add ``serve --dataset D [--port P] [--tracking-uri URI]``."""
    p = sub.add_parser("serve", help="serve a dataset's champion with MLflow's scoring server")
    p.add_argument("--dataset", required=True, help="the dataset whose `champion` is served")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (default {DEFAULT_PORT})")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or the embedded one)")
    p.set_defaults(func=cmd_serve)


def registered_name(dataset: str) -> str:
    """The registered model name of ``dataset`` (its experiment.yaml's, or ``<dataset>_model``)."""
    from experiments_dagster.core.catalog import dataset_dir
    from experiments_dagster.core.spec import resolve_spec

    return resolve_spec(dataset, dataset_dir(paths.data_dir(), dataset), {}).model_name


def serve_command(model_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """``mlflow models serve`` on ``model_dir`` with this environment's packages; its environment.

    ``--env-manager local`` serves from the running interpreter's environment, whose ``bin`` must
    be on PATH: MLflow starts ``uvicorn`` by name (without it: exit 127, "uvicorn: not found")."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model_dir)]
    return [*argv, "--env-manager", "local", "-h", HOST, "-p", str(port)], env


def cmd_serve(args: argparse.Namespace) -> int:
    """Verify the champion's files, then serve the checked copy until SIGINT/SIGTERM."""
    from mlflow.exceptions import MlflowException

    from experiments_dagster.experiment.registry import CHAMPION
    from experiments_dagster.tracking.model_gate import load_refusal
    from experiments_dagster.tracking.model_io import ModelVerificationError, download_verified_model

    name = registered_name(args.dataset)
    client = answering_client(args.tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        raise UsageError(
            f"{name} has no `{CHAMPION}` version ({exc.message.splitlines()[0]}): train the dataset "
            f"first (`experiments-dagster run --dataset {args.dataset}`)."
        ) from None
    uri = f"models:/{name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="experiments-serve-") as tmp:
        try:
            local = download_verified_model(client, uri, Path(tmp))
        except ModelVerificationError as exc:
            raise UsageError(f"{uri} ({CHAMPION}) will not be served: {exc}") from None
        refusal = load_refusal(local)  # the server would run what its MLmodel names: ours only
        if refusal is not None:
            raise UsageError(f"{uri} ({CHAMPION}) will not be served: {refusal}")
        argv, env = serve_command(local, args.port)
        server = subprocess.Popen(argv, env=env, start_new_session=True)
        print(
            f"Serving {name} v{version.version} ({CHAMPION} of {args.dataset}) at "
            f"http://{HOST}:{args.port}/invocations, PID {server.pid}. Ctrl-C stops it.",
            flush=True,
        )
        return _wait(server)


def _wait(server: subprocess.Popen) -> int:
    """Wait for the server; SIGINT/SIGTERM stop its whole process group (uvicorn's workers too)."""
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = server.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if server.poll() is None:
            try:
                server.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    return 0 if stopping else code
