"""The local stack's object store takes writes only with credentials, a value planted in it is
refused before unpickling, and no service has a secret on its command line."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from devstack.local import BUCKET, LocalStack
from devstack.seaweed import find_weed
from experiments_dagster.core.profile import S3_URL_ENV
from experiments_dagster.core.signing import KEY_ENV, UntrustedValueError
from experiments_dagster.defs.io_manager import ExperimentIOManager
from experiments_dagster_tests.stack.conftest import client_for, copy_dataset, run_cli

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PLANTED = f"{BUCKET}/values/planted/by-probe"


def http(method: str, url: str, data: bytes | None = None) -> int | str:
    """The HTTP status of an unauthenticated request (or the connection error's name)."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return type(exc).__name__


def weed_client(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """A `weed` client command; it reads security.toml from ``cwd`` and ``home`` only."""
    env = {**os.environ, "HOME": str(home)}
    env = {k: v for k, v in env.items() if not k.startswith("WEED_")}
    return subprocess.run([find_weed(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_object_store_takes_no_write_without_credentials(stack: LocalStack, s3, tmp_path: Path):
    ports = stack.settings().weed_ports
    filer = f"http://127.0.0.1:{ports['filer.port']}"
    # The filer's HTTP API (the write path of the report) is closed: no write, no read.
    assert http("POST", f"{filer}/buckets/{PLANTED}", b"planted") == 404
    assert http("PUT", f"{filer}/buckets/{PLANTED}", b"planted") == 404
    assert http("GET", f"{filer}/buckets/{BUCKET}/") == 404
    # The master hands out no file ids over HTTP, and a volume takes no write without a signed token.
    assert http("POST", f"http://127.0.0.1:{ports['master.port']}/dir/assign") == 404
    assert http("POST", f"http://127.0.0.1:{ports['volume.port']}/1,01637037d6", b"planted") == 401
    # gRPC: filer.copy (filer API) and upload (master assign + volume write) without the certificate.
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    payload = tmp_path / "by-probe"
    payload.write_bytes(b"planted")
    filer_grpc = f"127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}"
    copy = ["filer.copy", str(payload), f"http://{filer_grpc}/buckets/{BUCKET}/values/planted/"]
    refused = weed_client(copy, cwd=attacker, home=attacker)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "rpc error" in said and "server preface" in said, said
    master = f"127.0.0.1:{ports['master.port']}.{ports['master.port.grpc']}"
    upload = weed_client(["upload", f"-master={master}", str(payload)], cwd=attacker, home=attacker)
    said = upload.stdout + upload.stderr
    assert upload.returncode != 0 and "rpc error" in said and "server preface" in said, said
    s3.invalidate_cache()
    assert not s3.exists(PLANTED)
    # The same command with the stack's security.toml (its certificate) does write: the probe is real.
    allowed = weed_client(copy, cwd=stack.root / "s3", home=attacker)
    assert allowed.returncode == 0, allowed.stderr
    s3.invalidate_cache()
    assert s3.cat_file(PLANTED) == b"planted"
    s3.rm(PLANTED)


class Payload:
    """Creates ``marker`` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_planted_in_the_stacks_bucket_is_refused(
    stack_env: dict, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    for name, value in stack_env.items():  # `. .stack/env`: the S3 keys and the values key
        monkeypatch.setenv(name, value)
    assert len(os.environ[KEY_ENV]) == 64
    manager = ExperimentIOManager(base_dir=stack_env[S3_URL_ENV]).create_io_manager(
        dg.build_init_resource_context()
    )
    defn = dg.StaticPartitionsDefinition(["probe/v1", "probe/v2"])
    asset = dg.AssetKey("raw_data")
    out = dg.build_output_context(asset_key=asset, partition_key="probe/v1", asset_partitions_def=defn)
    inp = dg.build_input_context(asset_key=asset, partition_key="probe/v1", asset_partitions_def=defn)
    manager.handle_output(out, pd.DataFrame({"x": [1, 2]}))
    assert manager.load_input(inp)["x"].tolist() == [1, 2]
    # Planted under a partition never written before, so that no earlier version of the object
    # can be served; the test waits (bounded) until the store serves the planted bytes.
    key = f"{BUCKET}/values/raw_data/probe/v2"
    marker = tmp_path / "payload-ran"
    planted = pickle.dumps(Payload(marker), protocol=4)
    s3.pipe_file(key, planted)  # a client with the S3 keys
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s3.invalidate_cache()
        if s3.exists(key) and s3.cat_file(key) == planted:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the store did not serve the planted object s3://{key} within 30 s")
    planted_input = dg.build_input_context(
        asset_key=asset, partition_key="probe/v2", asset_partitions_def=defn
    )
    with pytest.raises(UntrustedValueError) as exc:
        manager.load_input(planted_input)
    message = str(exc.value)
    assert f"asset 'raw_data' partition 'probe/v2' at s3://{key}: it carries no signature" in message
    assert "Materialize 'raw_data' for partition 'probe/v2' again" in message
    assert not marker.exists()
    s3.rm(key)
    s3.rm(f"{BUCKET}/values/raw_data/probe/v1")


def session_processes(leader: int) -> dict[int, str]:
    """Every process in the session ``leader`` started (a service and its children): cmdlines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        session = int(stat.rsplit(")", 1)[1].split()[3])  # fields after "(comm)": state ppid pgrp session
        if session == leader:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def readable_files_with(root: Path, secrets: dict[str, str]) -> list[str]:
    """Files under ``root`` that hold a secret and that other users may read."""
    found = []
    for path in root.rglob("*"):
        try:
            info = path.lstat()
            if not path.is_file() or path.is_symlink() or info.st_size > 2**20:
                continue
            text = path.read_bytes().decode(errors="replace")
        except OSError:
            continue
        leaked = [what for what, secret in secrets.items() if secret in text]
        if leaked and info.st_mode & 0o077:
            found.append(f"{path} (mode {oct(info.st_mode & 0o777)}): {leaked}")
    return found


def test_no_secret_is_on_a_command_line_or_in_a_file_others_can_read(stack: LocalStack):
    s = stack.settings()
    secrets = {
        "PostgreSQL password": s.pg_password,
        "S3 secret key": s.s3_secret_key,
        "MLflow admin password": s.admin_password,
        "MLflow client password": s.client_password,
        "Flask secret": s.flask_secret,
        "Redis password": s.redis_password,
        "values key": s.values_key,
    }
    jwt = tomllib.loads((stack.root / "s3" / "security.toml").read_text())["jwt"]
    jwt_keys = [jwt["signing"]["key"], jwt["filer_signing"]["key"], jwt["filer_signing"]["read"]["key"]]
    assert all(len(key) >= 32 for key in jwt_keys)
    secrets.update({f"SeaweedFS JWT key {i}": key for i, key in enumerate(jwt_keys)})
    seen = {}
    for service in stack.services():
        pid = stack.pid(service)
        assert pid is not None, f"{service} is not running"
        seen[service] = session_processes(pid)
        assert pid in seen[service]
        for process, cmdline in seen[service].items():
            leaked = [what for what, secret in secrets.items() if secret in cmdline]
            assert leaked == [], f"{service} (pid {process}) has {leaked} on its command line: {cmdline}"
    assert readable_files_with(stack.root, secrets) == []
    mlflow = seen["mlflow"][stack.pid("mlflow")]
    assert " server " in mlflow and "--backend-store-uri" not in mlflow and "postgresql" not in mlflow
    assert len(seen["mlflow"]) > 1  # its web server workers were checked too


def test_a_pickle_planted_as_an_asset_value_never_runs_on_the_workers(stack_env: dict, s3, tmp_path: Path):
    """The report's attack: a pickle written into the bucket as ``splits`` before a ``--select`` run."""
    copy_dataset(stack_env, "iris", as_name="planted_iris")
    first = run_cli(stack_env, "run")
    assert first.returncode == 0, first.stdout + first.stderr  # signed on the workers, loaded on them
    key = f"{BUCKET}/values/splits/planted_iris/v1"
    assert s3.exists(key)
    marker = tmp_path / "payload-ran"
    s3.pipe_file(key, pickle.dumps(Payload(marker), protocol=4))
    second = run_cli(stack_env, "run", "--select", "fold_models")
    said = second.stdout + second.stderr
    assert second.returncode != 0, said
    assert f"Refused the stored value of asset 'splits' partition 'planted_iris/v1' at s3://{key}" in said
    assert "Materialize 'splits' for partition 'planted_iris/v1' again" in said
    assert not marker.exists()
    client = client_for(stack_env)
    experiment = client.get_experiment_by_name("planted_iris")
    runs = client.search_runs([experiment.experiment_id])
    assert runs and not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
