"""Redis: Celery's broker and result backend, ``redis-server`` from PATH with a password, no persistence."""

from __future__ import annotations

import os
import shutil

from devstack.environment import ClientEnvironment
from devstack.settings import StackError


class RedisBroker(ClientEnvironment):
    """The stack's Redis server."""

    def start_redis(self) -> None:
        s = self.settings()
        program = shutil.which("redis-server")
        if program is None:
            raise StackError(
                "`redis-server` was not found on PATH: install it with `apt-get install redis-server`."
            )
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "redis.conf"
        # A config file, not arguments, so the password is not in `ps` output. No persistence:
        # the broker holds only in-flight tasks, and a restart between runs loses nothing.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f"bind 127.0.0.1\nport {s.ports['redis']}\nrequirepass {s.redis_password}\n"
                f'dir {folder}\nsave ""\nappendonly no\nprotected-mode yes\ndaemonize no\n'
            )
        process = self._spawn("redis", [program, str(conf)], dict(os.environ), cwd=folder)
        self._wait("redis", self._redis_ping, process)

    def _redis_ping(self) -> None:
        import redis

        s = self.settings()
        client = redis.Redis(
            host="127.0.0.1", port=s.ports["redis"], password=s.redis_password, socket_timeout=2
        )
        try:
            client.ping()
        finally:
            client.close()

    def restart_redis(self) -> None:
        self.stop("redis")
        self.start_redis()
