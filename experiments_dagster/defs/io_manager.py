"""The IO manager: fs_io_manager's pickle files, written atomically, no per-call logs, a value cache.

Values are pickled to ``<base_dir>/<asset key path>/<partition key>`` (``base_dir`` defaults to
the instance's storage directory, ``$DAGSTER_HOME/storage``), exactly where Dagster's
``fs_io_manager`` keeps them, so values written by earlier runs, by runs in other processes (the
daemon, a re-execution, a plots-only re-materialization) or by ``fs_io_manager`` itself load.

What it does differently, and why (profiling on a 1,000,000 x 50 dataset):

- no ``context.log`` call per load or write: ``fs_io_manager`` logs ~52 DEBUG messages per run,
  each one stored in the event log (one SQLite connection and commit each) although nobody reads
  them at INFO;
- one in-process cache per run (the ``in_process_executor`` runs a run's steps in one process,
  and resources are initialized once per run there): a value written or loaded once is handed to
  every later step as the same object instead of being unpickled again (``splits`` was unpickled
  by 6 steps, ``raw_data`` by 2: ~27 s of ``pickle.load`` per run);
- writes go to a temporary file that is then renamed over the target, so a killed run leaves the
  previous value or the new one, never half a pickle.

Consumers must not mutate their inputs: every step gets the same object (the values in
``experiments_dagster.values`` are frozen dataclasses, but the DataFrames and pipelines inside
them are not), so an in-place change would leak into the steps after it.
"""

import os
import pickle
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import dagster as dg

# Not exported by ``dagster``; subclassing it is what keeps our paths identical to
# fs_io_manager's (partition keys with "/" become subfolders; leading "/" and ".." are escaped).
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from pydantic import Field

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.paths import env_int

CACHE_ENV = "EXPERIMENTS_IO_CACHE_MB"
# 512 MB holds one large value, not two: on the 1,000,000 x 50 workload raw_data (377 MB pickle)
# is evicted when splits (378 MB) is written, after its two consumers ran, so the cache does not
# raise peak memory (target: peak RSS <= 4 GiB) while splits serves its 6 consumers from memory.
# A budget >= 755 MB would keep raw_data alive for the rest of the run for nothing.
DEFAULT_CACHE_MB = 512

# (st_ino, st_mtime_ns, st_size) of a value's file. Every write of ours is a new inode (rename),
# so the inode also catches a same-size rewrite within the filesystem's timestamp granularity.
Stamp = tuple[int, int, int]
MISS = object()  # a cache miss (None is a value)


def file_stamp(st: os.stat_result) -> Stamp:
    """The identity of one version of a file: inode, modification time (ns) and size."""
    return st.st_ino, st.st_mtime_ns, st.st_size


class ValueCache:
    """Values by file path, valid while the file's stamp is unchanged; LRU within a byte budget.

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
        """The value cached for this version of the file, else the ``MISS`` sentinel."""
        entry = self._entries.get(path)
        if entry is None:
            return MISS
        if entry[0] != stamp:  # rewritten since (another run, another process)
            self.discard(path)
            return MISS
        self._entries.move_to_end(path)
        return entry[1]

    def put(self, path: str, stamp: Stamp, value: Any) -> None:
        """Cache ``value`` as the content of this version of the file, evicting the least recently used."""
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
        return env_int(CACHE_ENV, DEFAULT_CACHE_MB, 0, what, fix) * 2**20
    if cache_mb < 0:
        raise ExperimentInputError(f"cache_mb='{cache_mb}' is not valid: use {what}; {fix}")
    return cache_mb * 2**20


def missing_value_message(context: dg.InputContext, path: Path, partition: str | None) -> str:
    """What is missing, where it was looked for, and how to produce it."""
    if not context.has_asset_key:
        upstream = context.upstream_output
        what = (
            f"output {upstream.name!r} of step {upstream.step_key!r}" if upstream else "the upstream output"
        )
        return f"No stored value for {what}: {path} does not exist. Re-execute the run from its start."
    asset = context.asset_key.to_user_string()
    of = f"asset {asset!r}" + (f" partition {partition!r}" if partition is not None else "")
    materialize = f"Materialize {asset!r}" + (
        f" for partition {partition!r}" if partition is not None else ""
    )
    return (
        f"No stored value for {of}: {path} does not exist (never materialized here, or deleted). "
        f"{materialize} first (e.g. select it together with this asset), then run this step again."
    )


class CachedPickleIOManager(PickledObjectFilesystemIOManager):
    """fs_io_manager's files and paths, with atomic writes, no per-call logs and a value cache."""

    def __init__(self, base_dir: str, cache: ValueCache) -> None:
        super().__init__(base_dir=base_dir)
        self.cache = cache

    def _output_path(self, context: dg.OutputContext) -> Path:
        if not context.has_asset_partitions:
            return Path(self._get_path(context))
        paths = list(self._get_paths_for_partitions(context).values())
        if len(paths) != 1:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}: one output for {len(paths)} partitions cannot be "
                "stored as one file per partition. Launch the backfill with one run per partition."
            )
        self._handle_transition_to_partitioned_asset(context, paths[0].parent)
        return Path(paths[0])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Pickle ``obj`` to a temporary file, rename it over the value's file, cache ``obj``."""
        path = self._output_path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same folder, so the rename is atomic; unique per writer, so concurrent runs don't clash.
        # No fsync: the rename guards against a killed process, which is the failure we see.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.dump_to_path(context, obj, tmp)  # fs_io_manager's pickling and unpicklable-value error
            stamp = file_stamp(os.stat(tmp))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.cache.put(str(path), stamp, obj)
        # Not "path" as fs_io_manager: that key is raw_data's data file, which it overwrote.
        if obj is not None:  # as fs_io_manager: a None output is usually not meant to be stored
            context.add_output_metadata(
                {"storage_path": dg.MetadataValue.path(str(path)), "storage_bytes": stamp[2]}
            )

    def load_input(self, context: dg.InputContext) -> Any:
        """The upstream value (a dict by partition key if several partitions are asked for)."""
        if not context.has_asset_key or not context.has_asset_partitions:
            return self._load(context, Path(self._get_path(context)), None)
        keys = context.asset_partition_keys
        if not keys:
            return None
        paths = self._get_paths_for_partitions(context)
        if len(keys) == 1:
            return self._load(context, Path(paths[keys[0]]), keys[0])
        return {key: self._load(context, Path(paths[key]), key) for key in keys}

    def _load(self, context: dg.InputContext, path: Path, partition: str | None) -> Any:
        try:
            with open(path, "rb") as file:
                # Stamp of the open file, so it is the version read even if it is replaced meanwhile.
                stamp = file_stamp(os.fstat(file.fileno()))
                value = self.cache.get(str(path), stamp)
                if value is not MISS:
                    return value
                value = pickle.load(file)
        except FileNotFoundError as exc:
            raise ExperimentInputError(missing_value_message(context, path, partition)) from exc
        self.cache.put(str(path), stamp, value)
        return value


class ExperimentIOManager(dg.ConfigurableIOManagerFactory):
    """Pickle files where fs_io_manager keeps them; a run's steps share values through a cache."""

    base_dir: str | None = Field(
        default=None,
        description="Folder of the pickle files; unset means the instance's storage directory "
        "($DAGSTER_HOME/storage), as for fs_io_manager.",
    )
    cache_mb: int | None = Field(
        default=None,
        description=f"Byte budget of the in-run value cache in MB; unset means ${CACHE_ENV}, else "
        f"{DEFAULT_CACHE_MB}. 0 disables the cache.",
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> CachedPickleIOManager:
        """One IO manager, and so one cache, per run (per step process with other executors)."""
        if self.base_dir is None and context.instance is None:
            raise dg.DagsterInvariantViolationError(
                "ExperimentIOManager needs base_dir or a Dagster instance."
            )
        base_dir = self.base_dir or context.instance.storage_directory()
        return CachedPickleIOManager(base_dir, ValueCache(cache_budget_bytes(self.cache_mb)))
