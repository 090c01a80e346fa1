"""PostgreSQL: a cluster under ``<stack>/pg`` (``initdb`` once, then ``postgres``) with the stack's
databases (``dagster``, ``mlflow``, ``mlflow_auth``, ``optuna``); as the `postgres` user when run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devstack.environment import ClientEnvironment
from devstack.settings import DATABASES, PG_USER, StackError

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


def pg_program(name: str) -> str:
    """``initdb`` or ``postgres`` from PATH or Debian's PostgreSQL folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    raise StackError(
        f"PostgreSQL's `{name}` was not found (PATH, {', '.join(PG_BIN_DIRS)}): "
        "install it with `apt-get install postgresql`."
    )


class PostgresService(ClientEnvironment):
    """The stack's PostgreSQL server."""

    def _as_postgres_user(self) -> dict[str, object]:
        """PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user."""
        if os.geteuid() != 0:
            return {}
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError("running as root needs a `postgres` user for PostgreSQL's programs") from exc
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start_postgres(self) -> None:
        pg = self.root / "pg"
        as_user = self._as_postgres_user()
        if not (pg / "data" / "PG_VERSION").is_file():
            self._initdb(pg, as_user)
        s = self.settings()
        command = [
            pg_program("postgres"),
            *("-D", str(pg / "data")),
            *("-c", "listen_addresses=127.0.0.1"),
            *("-c", f"port={s.ports['postgres']}"),
            *("-c", f"unix_socket_directories={pg / 'run'}"),
            *("-c", "max_connections=200"),
        ]
        process = self._spawn("postgres", command, {**os.environ, "LC_ALL": "C"}, cwd=pg, **as_user)
        self._wait("postgres", lambda: self._pg_connect("postgres").close(), process)
        self._create_databases()

    def _initdb(self, pg: Path, as_user: dict[str, object]) -> None:
        """A new cluster in ``pg/data`` whose superuser has the stack's password."""
        data, sockets, pwfile = pg / "data", pg / "run", pg / "pwfile"
        if data.exists():
            shutil.rmtree(data)  # an initdb that did not finish
        sockets.mkdir(parents=True, exist_ok=True)
        pwfile.write_text(self.settings().pg_password + "\n")
        if as_user:
            _make_reachable(pg, as_user["user"])
            for path in (pg, sockets, pwfile):
                os.chown(path, as_user["user"], as_user["group"])
        pwfile.chmod(0o600)
        command = [
            pg_program("initdb"),
            f"--pgdata={data}",
            f"--username={PG_USER}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, cwd=pg, **as_user)
        except subprocess.CalledProcessError as exc:
            raise StackError(f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}") from exc
        finally:
            pwfile.unlink(missing_ok=True)

    def _create_databases(self) -> None:
        conn = self._pg_connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            for database in DATABASES:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()

    def _pg_connect(self, database: str):
        import psycopg2

        s = self.settings()
        return psycopg2.connect(
            host="127.0.0.1",
            port=s.ports["postgres"],
            user=PG_USER,
            password=s.pg_password,
            dbname=database,
            connect_timeout=3,
        )

    def restart_postgres(self) -> None:
        self.stop("postgres")
        self.start_postgres()


def _make_reachable(folder: Path, uid: int) -> None:
    """The `postgres` user must be able to walk down to its data folder."""
    for parent in [folder, *folder.parents]:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by the `postgres` user (mode {oct(mode & 0o777)}); "
                f"`chmod o+x {parent}` or choose a stack folder elsewhere."
            )
