"""How the IO manager stores one value: signed pickles at fs_io_manager's paths, written atomically.

Paths: ``relative_parts`` and ``safe_partition`` escape keys as ``UPathIOManager`` and
``fs_io_manager`` do, so nothing leaves the asset's folder. Writes: ``write_local`` renames a
temporary file in the same folder over the target, ``write_object`` uploads a local temporary
file in one call; either way a reader sees the old value or the new one, never half a pickle.
Each value is pickled with ``dump``, signed for its name (``core/signing.py``). The Dagster IO
manager around these, with its cache and loading: ``io_manager.py``.
"""

import os
import pickle
import tempfile
import uuid
from typing import Any

from upath import UPath

from experiments_dagster.core.signing import SigningWriter
from experiments_dagster.defs.value_cache import Stamp, file_stamp, object_stamp
from experiments_dagster.defs.value_messages import unpicklable_error

# fs_io_manager's protocol (dagster's PICKLE_PROTOCOL).
PICKLE_PROTOCOL = 4
LOCAL_PROTOCOLS = ("", "file", "local")


def is_local(path: UPath) -> bool:
    return path.protocol in LOCAL_PROTOCOLS


def relative_parts(path: Any) -> tuple[str, ...]:
    """``path``'s parts joinable under a base: as UPathIOManager, an absolute first part is escaped."""
    parts = tuple(p for p in path.parts if p != "/")
    if path.is_absolute() and parts:
        parts = ("%2F" + parts[0], *parts[1:])
    return parts


def safe_partition(partition: str) -> str:
    """fs_io_manager's escaping: a leading "/" and whole ".." segments cannot leave the asset's folder."""
    if partition.startswith("/"):
        partition = "%2F" + partition[1:]
    return "/".join("%2E%2E" if p == ".." else p for p in partition.split("/"))


def dump(obj: Any, file: Any, key: bytes, name: str) -> None:
    """Pickle ``obj`` to ``file``, signed for ``name`` (signing.py)."""
    writer = SigningWriter(file, key, name)
    try:
        pickle.dump(obj, writer, PICKLE_PROTOCOL)
    except (AttributeError, RecursionError, ImportError, pickle.PicklingError) as exc:
        raise unpicklable_error(obj, exc) from exc
    writer.finish()


def write_local(obj: Any, path: UPath, key: bytes, name: str) -> Stamp:
    """Pickle ``obj`` to the local ``path``, signed for ``name``, by renaming a finished temporary file."""
    # Same folder, so the rename is atomic; unique per writer, so concurrent runs don't clash.
    # No fsync: the rename guards against a killed process, which is the failure we see.
    target = path.path
    folder, file_name = os.path.split(target)
    tmp = os.path.join(folder, f".{file_name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as file:
            dump(obj, file, key, name)
        stamp = file_stamp(os.stat(tmp))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return stamp


def write_object(obj: Any, path: UPath, key: bytes, name: str) -> Stamp | None:
    """Pickle ``obj`` to the object-store ``path``, signed for ``name``, in one upload; returns the
    store's stamp of it, or None if the store gives none or its size is not what was written."""
    # Pickled to a local temporary file first, then uploaded in one call: writing through
    # fsspec's file object instead would upload what was pickled so far if pickling fails
    # (its close() commits). A single PUT, or a multipart upload completed at the end, is
    # atomic on S3: readers see the previous object until the new one is whole.
    fs, object_key = path.fs, path.path
    with tempfile.NamedTemporaryFile(prefix="experiments-value-", suffix=".pickle") as tmp:
        dump(obj, tmp, key, name)
        tmp.flush()
        size = os.fstat(tmp.fileno()).st_size
        fs.put_file(tmp.name, object_key)
    # The store's stamp of what we just wrote (put_file returns none). Another writer of the
    # same key in between would make us cache our value under its stamp; one run per
    # partition (the dagster/partition concurrency limit) rules that out, and a size mismatch
    # is caught here.
    fs.invalidate_cache(object_key)
    stamp = object_stamp(fs.info(object_key))
    return stamp if stamp is not None and stamp[2] == size else None
