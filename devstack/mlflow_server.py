"""MLflow's tracking server: ``mlflow server --app-name basic-auth --serve-artifacts``, one worker, its
runs in PostgreSQL, its artifacts in the S3 bucket, and the basic-auth users the stack creates."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from base64 import b64encode

from devstack import seaweed
from devstack.environment import ClientEnvironment
from devstack.settings import ADMIN_USER, BUCKET, CLIENT_USER


class MlflowServer(ClientEnvironment):
    """The stack's MLflow server and its REST API as the basic-auth admin."""

    def mlflow_env(self) -> dict[str, str]:
        """The server's environment: its object store, auth config and secrets (never the clients')."""
        s = self.settings()
        folder = self.root / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        ini = folder / "basic_auth.ini"
        seaweed.write_private(  # holds the auth database's password: 0600 from the start
            ini,
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.pg_url('mlflow_auth')}\n"
            f"admin_username = {ADMIN_USER}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # One worker, so no other worker can hold a stale entry; saves PBKDF2 per request.
            "auth_cache_ttl_seconds = 300\n".encode(),
        )
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            # The server's own option (--backend-store-uri) from its environment, so the
            # PostgreSQL password is not on its command line for every local user's `ps`.
            "MLFLOW_BACKEND_STORE_URI": self.pg_url("mlflow"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": s.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s.flask_secret,
            "MLFLOW_S3_ENDPOINT_URL": self.urls()["s3"],
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_DEFAULT_REGION": seaweed.REGION,
        }

    def start_mlflow(self) -> None:
        s = self.settings()
        command = [
            str(self.bin / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{BUCKET}/mlflow",
            "--host",
            "127.0.0.1",
            "--port",
            str(s.ports["mlflow"]),
            "--workers",
            "1",
        ]
        process = self._spawn("mlflow", command, self.mlflow_env(), cwd=self.root / "mlflow")
        url = self.urls()["mlflow"]
        self._wait("mlflow", lambda: urllib.request.urlopen(f"{url}/health", timeout=2).close(), process)
        self.create_user(CLIENT_USER, s.client_password)

    def admin_request(self, endpoint: str, payload: dict, method: str = "POST") -> dict:
        """A call to the server's REST API as the basic-auth admin."""
        s = self.settings()
        token = b64encode(f"{ADMIN_USER}:{s.admin_password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.urls()['mlflow']}{endpoint}",
            data=json.dumps(payload).encode(),
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def create_user(self, username: str, password: str) -> None:
        """A basic-auth user (kept if it exists)."""
        try:
            self.admin_request("/api/2.0/mlflow/users/create", {"username": username, "password": password})
        except urllib.error.HTTPError as exc:
            if b"RESOURCE_ALREADY_EXISTS" not in exc.read():
                raise
