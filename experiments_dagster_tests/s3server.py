"""A real S3-compatible server for tests: SeaweedFS (``weed mini``, devstack.seaweed)
on 127.0.0.1 with free ports, its data in a temp dir, owned by the test process (stopped by PID)."""

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.seaweed import (
    REGION,
    WeedNotFoundError,
    find_weed,
    free_port,
    free_ports,
    s3_answers,
    storage_options,
    weed_command,
)

__all__ = ["REGION", "S3Server", "WeedNotFoundError", "find_weed", "free_port", "start_s3_server"]

ACCESS_KEY = "experiments-test"
SECRET_KEY = "experiments-test-secret"  # a test-only credential of a throwaway local server
READY_TIMEOUT_S = 60.0


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
        return storage_options(self.endpoint_url, self.access_key, self.secret_key)

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
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports()
    command = weed_command(root, ports, ACCESS_KEY, SECRET_KEY)
    log_path = root / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        process=process,
        data_dir=root / "data",
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
        last = s3_answers(server.endpoint_url, server.access_key, server.secret_key)
        if last is None:
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"SeaweedFS S3 at {server.endpoint_url} not ready after {timeout:.0f} s ({last!r}); "
        f"log:\n{server.log_path.read_text(errors='replace')[-4000:]}"
    )
