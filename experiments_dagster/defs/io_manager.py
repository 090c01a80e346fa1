"""The IO manager: Dagster's ``UPathIOManager`` storing pickles on a local folder or an object store.

Values are pickled to ``<base_dir>/<asset key path>/<partition key>`` (``base_dir`` defaults to
the instance's storage directory, ``$DAGSTER_HOME/storage``), exactly where Dagster's
``fs_io_manager`` keeps them, so values written by earlier runs, by runs in other processes (the
daemon, a re-execution, a plots-only re-materialization) or by ``fs_io_manager`` itself load.
``base_dir`` may also be an object-store URL such as ``s3://bucket/prefix`` (through
``universal-pathlib`` and ``s3fs``): the same keys under that prefix, for the production profile,
where steps share no disk.

What it does beyond ``UPathIOManager``'s defaults, and why (profiling on a 1,000,000 x 50 dataset):

- no ``context.log`` call per load or write: the base class logs ~52 DEBUG messages per run
  ("Loading partition ...", "Writing file at ..."), each one stored in the event log although
  nobody reads them at INFO;
- one in-process cache per run (the ``in_process_executor`` runs a run's steps in one process,
  and resources are initialized once per run there): a value written or loaded once is handed to
  every later step as the same object instead of being unpickled again (``splits`` was unpickled
  by 6 steps, ``raw_data`` by 2: ~27 s of ``pickle.load`` per run). A cached value is used only
  while its file or object is unchanged (local: inode, mtime in ns, size; object store: version
  id or ETag, last-modified time, size), so a rewrite by another process is seen;
- atomic writes: locally a temporary file in the same folder renamed over the target; on an
  object store one upload (a PUT, or a multipart upload that the store publishes only when it is
  completed). A killed run leaves the previous value or the new one, never half a pickle;
- signed values (``experiments_dagster/core/signing.py``): each stored value ends with an HMAC-SHA256
  of its bytes and path, checked before unpickling, so bytes this deployment did not write never
  run. Values from before signing (and ``fs_io_manager``'s) are refused with the fix:
  re-materialize them. ``fs_io_manager`` cannot read ours any more either.

Paths, atomic writes and the signed pickle format are in ``value_store.py``; the cache in
``value_cache.py``; this module is the Dagster IO manager (``CachedPickleIOManager``) and its
configurable resource (``ExperimentIOManager``).

Consumers must not mutate their inputs: every step gets the same object (the values in
``experiments_dagster.experiment.values`` are frozen dataclasses, but the DataFrames and pipelines inside
them are not), so an in-place change would leak into the steps after it.
"""

import os
import pickle
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import default_dagster_home
from experiments_dagster.core.signing import UntrustedValueError, values_key, verified_payload
from experiments_dagster.defs.value_cache import (
    CACHE_ENV,
    DEFAULT_CACHE_MB,
    MISS,
    Stamp,
    ValueCache,
    cache_budget_bytes,
    file_stamp,
    object_stamp,
)
from experiments_dagster.defs.value_messages import (
    missing_value_message,
    stale_value_message,
    untrusted_value_message,
)
from experiments_dagster.defs.value_store import (
    is_local,
    relative_parts,
    safe_partition,
    write_local,
    write_object,
)


class StaleValueError(Exception):
    """A verified value names a module or class this code no longer has (it moved since)."""


class CachedPickleIOManager(dg.UPathIOManager):
    """Pickles at fs_io_manager's paths under a local folder or an object-store prefix.

    Built on the public ``UPathIOManager`` hooks (``dump_to_path``, ``load_from_path``,
    ``get_path_for_partition``/``make_safe_partition_path``, ``make_directory``,
    ``get_asset_relative_path``/``get_op_output_relative_path``). ``handle_output`` and
    ``load_input`` are overridden whole because the base class's versions call ``context.log.debug``
    on every load and write and have no public switch to turn that off; they compute the same paths
    from the same hooks (the base class's path helpers are ``_``-prefixed, so they are not used).
    """

    extension = ""  # as fs_io_manager: the file is named by the partition key alone

    def __init__(self, base_path: UPath | str, cache: ValueCache, key: bytes) -> None:
        base_path = UPath(base_path)  # a UPath is kept as is, with its storage options
        super().__init__(base_path=base_path)
        self.base_path = base_path
        self.cache = cache
        self.key = key
        self.local = is_local(base_path)

    # --- paths -------------------------------------------------------------------------------

    def signed_name(self, path: UPath) -> str:
        """The name a value is signed under: its path below ``base_path``."""
        return path.path[len(self.base_path.path) :].strip("/")

    def make_safe_partition_path(self, base_path: UPath, partition: str) -> UPath:
        return base_path / safe_partition(partition)

    def value_root(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        """``<base>/<asset key path>`` (or the op output's identifier for op outputs)."""
        relative = (
            self.get_asset_relative_path(context)
            if context.has_asset_key
            else self.get_op_output_relative_path(context)
        )
        return self.base_path.joinpath(*relative_parts(relative))

    def partition_paths(self, context: dg.InputContext | dg.OutputContext) -> dict[str, UPath]:
        """The path of each of the context's partitions (multi-partition keys as fs_io_manager)."""
        root = self.value_root(context)
        paths = {}
        for key in context.asset_partition_keys:
            formatted = (
                "/".join(v for _, v in sorted(key.keys_by_dimension.items()))
                if isinstance(key, dg.MultiPartitionKey)
                else key
            )
            paths[key] = self.get_path_for_partition(context, root, formatted)
        return paths

    def output_path(self, context: dg.OutputContext) -> UPath:
        if not context.has_asset_partitions:
            return self.value_root(context)
        paths = list(self.partition_paths(context).values())
        if len(paths) != 1:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()}: one output for {len(paths)} partitions cannot be "
                "stored as one file per partition. Launch the backfill with one run per partition."
            )
        self.replace_unpartitioned_file(context, paths[0].parent)
        return paths[0]

    def replace_unpartitioned_file(self, context: dg.OutputContext, folder: UPath) -> None:
        """As UPathIOManager: an asset that became partitioned has a file where its folder goes."""
        if folder.is_file():
            context.log.warning(
                f"Removing {folder}, the value of {context.asset_key.to_user_string()} from before it "
                "was partitioned, to store its partitions there."
            )
            folder.unlink(missing_ok=True)

    def make_directory(self, path: UPath) -> None:
        if self.local:
            os.makedirs(path.path, exist_ok=True)
        # An object store has no folders: a key's "parents" exist once the key does.

    # --- writing -----------------------------------------------------------------------------

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Store ``obj`` atomically, cache it, and add its path and size as output metadata."""
        path = self.output_path(context)
        self.make_directory(path.parent)
        stamp = self.write(obj, path)
        if stamp is not None:
            self.cache.put(str(path), stamp, obj)
        # Not "path" as fs_io_manager: that key is raw_data's data file, which it overwrote.
        if obj is not None:  # as fs_io_manager: a None output is usually not meant to be stored
            size = stamp[2] if stamp is not None else path.stat().st_size
            context.add_output_metadata(
                {"storage_path": dg.MetadataValue.path(str(path)), "storage_bytes": size}
            )

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        self.write(obj, path)

    def write(self, obj: Any, path: UPath) -> Stamp | None:
        """Pickle ``obj`` to ``path`` so that readers see the old value or the new, never a part."""
        if self.local:
            return write_local(obj, path, self.key, self.signed_name(path))
        return write_object(obj, path, self.key, self.signed_name(path))

    # --- loading -----------------------------------------------------------------------------

    def load_input(self, context: dg.InputContext) -> Any:
        """The upstream value (a dict by partition key if several partitions are asked for)."""
        if not context.has_asset_key or not context.has_asset_partitions:
            return self.load(context, self.value_root(context), None)
        keys = context.asset_partition_keys
        if not keys:
            return None
        paths = self.partition_paths(context)
        if len(keys) == 1:
            return self.load(context, paths[keys[0]], keys[0])
        return {key: self.load(context, paths[key], key) for key in keys}

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        return self.load(context, path, None)

    def load(self, context: dg.InputContext, path: UPath, partition: str | None) -> Any:
        try:
            return self.load_local(path) if self.local else self.load_object(path)
        except FileNotFoundError as exc:
            raise ExperimentInputError(missing_value_message(context, path, partition)) from exc
        except UntrustedValueError as exc:
            raise UntrustedValueError(untrusted_value_message(context, path, partition, str(exc))) from None
        except StaleValueError as exc:
            raise ExperimentInputError(stale_value_message(context, path, partition, exc.__cause__)) from exc

    def unpickle(self, path: UPath, data: bytes) -> Any:
        """The value in ``data``, unpickled only once its signature is verified."""
        payload = verified_payload(self.key, self.signed_name(path), data)
        try:
            return pickle.loads(payload)
        except (ImportError, AttributeError) as exc:  # signed by us, but a class it names is gone
            raise StaleValueError(str(exc)) from exc

    def load_local(self, path: UPath) -> Any:
        with open(path.path, "rb") as file:
            # Stamp of the open file, so it is the version read even if it is replaced meanwhile.
            stamp = file_stamp(os.fstat(file.fileno()))
            value = self.cache.get(str(path), stamp)
            if value is not MISS:
                return value
            # Read whole, then verified, then unpickled: the bytes checked are the bytes loaded
            # even if a writer changes the file in place meanwhile.
            data = file.read()
        value = self.unpickle(path, data)
        self.cache.put(str(path), stamp, value)
        return value

    def load_object(self, path: UPath) -> Any:
        fs, key = path.fs, path.path
        fs.invalidate_cache(key)  # fsspec may hold a listing from before another process wrote
        # Stamp first, then read: if the object is replaced in between, we cache the newer content
        # under the older stamp, and the next load sees a stamp mismatch and reads again.
        stamp = object_stamp(fs.info(key))
        if stamp is not None:
            value = self.cache.get(str(path), stamp)
            if value is not MISS:
                return value
        value = self.unpickle(path, fs.cat_file(key))
        if stamp is not None:
            self.cache.put(str(path), stamp, value)
        return value


class ExperimentIOManager(dg.ConfigurableIOManagerFactory):
    """Pickles where fs_io_manager keeps them, locally or on S3; a run's steps share a cache.

    ``base_dir``: a local folder (default: the instance's storage directory,
    ``$DAGSTER_HOME/storage``) or an object-store URL, e.g. ``s3://bucket/prefix``.

    For ``s3://`` (s3fs over botocore), endpoint and credentials come from the standard AWS
    settings unless ``storage_options`` gives them: ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``), ``AWS_ENDPOINT_URL`` (or
    ``AWS_ENDPOINT_URL_S3``) for an S3-compatible server, ``AWS_DEFAULT_REGION``, or a profile
    (``AWS_PROFILE``, ``~/.aws``). ``storage_options`` are s3fs's keyword arguments, e.g.
    ``{"endpoint_url": "http://127.0.0.1:8333", "key": ..., "secret": ...}``; prefer
    ``dg.EnvVar`` or the environment for secrets.

    Every value is signed (signing.py) with ``$EXPERIMENTS_VALUES_KEY``, which an ``s3://``
    ``base_dir`` requires; a local one falls back to ``values.key`` in the instance's folder.
    """

    base_dir: str | None = Field(
        default=None,
        description="Folder of the pickle files, or an object-store URL such as s3://bucket/prefix; "
        "unset means the instance's storage directory ($DAGSTER_HOME/storage), as for fs_io_manager.",
    )
    storage_options: dict[str, Any] | None = Field(
        default=None,
        description="fsspec/s3fs options for an object-store base_dir (endpoint_url, key, secret, "
        "client_kwargs, ...); unset means the AWS_* environment variables.",
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
        if self.storage_options and is_local(UPath(base_dir)):
            raise ExperimentInputError(
                f"storage_options are for an object-store base_dir (s3://...), not the folder {base_dir!r}."
            )
        # A fresh filesystem per manager: fsspec's instance cache is keyed by the arguments only,
        # so with endpoint and keys from the environment (the AWS_* variables) a cached s3fs would
        # keep talking to the server of the first manager made in this process.
        options = {**(self.storage_options or {}), "skip_instance_cache": True}
        base_path = UPath(base_dir, **options) if not is_local(UPath(base_dir)) else UPath(base_dir)
        key_folder = None
        if is_local(base_path):  # an object store's readers are elsewhere: they need the variable
            key_folder = Path(context.instance.root_directory) if context.instance else default_dagster_home()
        key = values_key(key_folder)
        return CachedPickleIOManager(base_path, ValueCache(cache_budget_bytes(self.cache_mb)), key)
