"""The IO manager's in-run value cache: values by path, valid while the stored bytes are unchanged."""

import os
from collections import OrderedDict
from typing import Any

from experiments_dagster.core import settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.settings import CACHE_ENV, DEFAULT_CACHE_MB  # noqa: F401  (io_manager.py imports them here)

# The identity of one version of a stored value: (identity, modification time, size in bytes).
# Local files: (st_ino, st_mtime_ns, st_size); every write of ours is a new inode (rename), so
# the inode also catches a same-size rewrite within the filesystem's timestamp granularity.
# Objects: (version id or ETag, last-modified, size); an ETag changes with the content.
Stamp = tuple[Any, Any, int]
MISS = object()  # a cache miss (None is a value)


def file_stamp(st: os.stat_result) -> Stamp:
    """The identity of one version of a file: inode, modification time (ns) and size."""
    return st.st_ino, st.st_mtime_ns, st.st_size


def object_stamp(info: dict[str, Any]) -> Stamp | None:
    """The identity of one version of an object from its fsspec ``info()``; None if it has none."""
    identity = next(
        (info[k] for k in ("VersionId", "ETag", "generation", "etag", "md5Hash") if info.get(k)), None
    )
    mtime = next((info[k] for k in ("LastModified", "mtime", "updated") if info.get(k)), None)
    if identity is None and mtime is None:
        return None  # nothing tells two versions of the same size apart: never cache
    return identity, str(mtime), int(info["size"])


class ValueCache:
    """Values by path, valid while the stored value's stamp is unchanged; LRU within a byte budget.

    A value's size is estimated by its pickle's size; a value bigger than the whole budget is
    not cached (a budget of 0 caches nothing).
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[str, tuple[Stamp, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, path: str, stamp: Stamp) -> Any:
        """The value cached for this version of the stored value, else the ``MISS`` sentinel."""
        entry = self._entries.get(path)
        if entry is None:
            return MISS
        if entry[0] != stamp:  # rewritten since (another run, another process)
            self.discard(path)
            return MISS
        self._entries.move_to_end(path)
        return entry[1]

    def put(self, path: str, stamp: Stamp, value: Any) -> None:
        """Cache ``value`` as this version's content, evicting the least recently used."""
        self.discard(path)
        size = stamp[2]
        if size > self.budget_bytes:
            return
        self._entries[path] = (stamp, value)
        self.used_bytes += size
        while self.used_bytes > self.budget_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self.used_bytes -= old[2]

    def discard(self, path: str) -> None:
        """Forget the value of ``path``, if cached."""
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.used_bytes -= entry[0][2]


def cache_budget_bytes(cache_mb: int | None) -> int:
    """``cache_mb``, else ``$EXPERIMENTS_IO_CACHE_MB``, else 512, as bytes (MB = 2**20 bytes)."""
    what = "a whole number of MB >= 0"
    fix = f"e.g. {DEFAULT_CACHE_MB} (0 disables the IO manager's value cache)."
    if cache_mb is None:
        return settings.io_cache_mb() * 2**20
    if cache_mb < 0:
        raise ExperimentInputError(f"cache_mb='{cache_mb}' is not valid: use {what}; {fix}")
    return cache_mb * 2**20
