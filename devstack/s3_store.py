"""The object store: SeaweedFS's S3 gateway (``weed mini``, seaweed.py) and the stack's bucket."""

from __future__ import annotations

import os

from devstack import seaweed
from devstack.environment import ClientEnvironment
from devstack.settings import BUCKET


class S3Store(ClientEnvironment):
    """The stack's S3 server, bucket ``experiments``: MLflow artifacts under ``mlflow/``, values under ``values/``."""

    def start_s3(self) -> None:
        s = self.settings()
        root = self.root / "s3"
        ports = {**s.weed_ports, "s3.port": s.ports["s3"]}
        command = seaweed.weed_command(root, ports, s.s3_access_key, s.s3_secret_key)
        process = self._spawn("s3", command, dict(os.environ), cwd=root)
        endpoint = self.urls()["s3"]
        self._wait("s3", lambda: seaweed.s3_answers(endpoint, s.s3_access_key, s.s3_secret_key), process)
        import s3fs

        fs = s3fs.S3FileSystem(
            **seaweed.storage_options(endpoint, s.s3_access_key, s.s3_secret_key), skip_instance_cache=True
        )
        if not fs.exists(BUCKET):
            fs.mkdir(BUCKET)
