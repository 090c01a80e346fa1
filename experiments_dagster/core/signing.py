"""Stored asset values carry an HMAC-SHA256, checked before a byte of them is unpickled.

A pickle is code: whoever can write ``<base_dir>/<asset>/<partition>`` (a data-folder writer, a
client of the object store) could otherwise run anything in the next step that loads it. So the IO
manager stores ``MAGIC + pickle + HMAC-SHA256(key, MAGIC, name, pickle)``, where ``name`` is the
value's path under ``base_dir`` (a signed value moved to another asset's path is refused too), and
loads a value only if the whole stored bytes, held in memory, match their tag (``hmac.compare_digest``,
constant time). Bytes without the tag (values stored before signing, by ``fs_io_manager``, or
planted) are refused, never unpickled: re-materializing the asset replaces them.

Why a MAC and not a format that cannot carry code: the values are DataFrames, fitted scikit-learn
pipelines and frozen dataclasses that only pickle round-trips exactly; a MAC keeps them as they
are and costs one SHA-256 pass (about a second per GB).

The key: ``$EXPERIMENTS_VALUES_KEY`` (at least 32 characters, e.g. ``secrets.token_hex(32)``),
shared by every process of a deployment (the local stack writes it into ``.stack/env``). Without
it, a local ``base_dir`` uses the key file ``values.key`` in the Dagster instance's folder
(``DAGSTER_HOME``, outside ``data/``), created once with mode 0600; an object store needs the
variable, since its readers run on other machines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path
from typing import IO

from experiments_dagster.core import settings
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.settings import KEY_ENV

KEY_FILE_NAME = "values.key"
MIN_KEY_CHARS = 32
MAGIC = b"experiments-dagster signed value v1\n"
TAG_BYTES = hashlib.sha256().digest_size


class UntrustedValueError(ExperimentInputError):
    """Stored bytes this deployment cannot prove it wrote: refused before unpickling."""


def new_mac(key: bytes, name: str) -> hmac.HMAC:
    """The MAC of a value stored under ``name``: the name (length-prefixed) is signed with it."""
    encoded = name.encode()
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(MAGIC + struct.pack(">Q", len(encoded)) + encoded)
    return mac


class SigningWriter:
    """A binary file wrapper for ``pickle.dump``: writes ``MAGIC``, the pickle, then its tag."""

    def __init__(self, file: IO[bytes], key: bytes, name: str) -> None:
        self.file = file
        self.mac = new_mac(key, name)
        file.write(MAGIC)

    def write(self, data: bytes) -> int:
        self.mac.update(data)
        return self.file.write(data)

    def finish(self) -> None:
        """Append the tag; call once, after the whole pickle is written."""
        self.file.write(self.mac.digest())


def verified_payload(key: bytes, name: str, data: bytes) -> memoryview:
    """The pickle inside ``data`` if its tag matches; else ``UntrustedValueError`` (a short reason)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + TAG_BYTES:
        raise UntrustedValueError("it carries no signature of this project")
    view = memoryview(data)
    payload = view[len(MAGIC) : len(view) - TAG_BYTES]
    mac = new_mac(key, name)
    mac.update(payload)
    if not hmac.compare_digest(mac.digest(), view[len(view) - TAG_BYTES :]):
        raise UntrustedValueError(
            f"its signature does not match (changed after it was written, moved from another path, "
            f"or signed with another ${KEY_ENV})"
        )
    return payload


def values_key(key_folder: Path | None) -> bytes:
    """``$EXPERIMENTS_VALUES_KEY``, else the key file in ``key_folder`` (created once, mode 0600)."""
    raw = settings.text(KEY_ENV)
    if raw:
        if len(raw) < MIN_KEY_CHARS:
            raise ExperimentInputError(
                f"${KEY_ENV} is {len(raw)} characters long; use at least {MIN_KEY_CHARS} random "
                'ones, e.g. `python -c "import secrets; print(secrets.token_hex(32))"`.'
            )
        return raw.encode()
    if key_folder is None:
        raise ExperimentInputError(
            f"${KEY_ENV} is not set: asset values in an object store are signed with a key every "
            f"process of the deployment shares. Set ${KEY_ENV} (at least {MIN_KEY_CHARS} random "
            "characters) for every Dagster process and worker; `. .stack/env` sets it for the local stack."
        )
    return key_from_file(key_folder / KEY_FILE_NAME)


def key_from_file(path: Path) -> bytes:
    """The key in ``path``, created atomically (mode 0600) if missing; refused if others can touch it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # fails if another process created it first: then its key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ExperimentInputError(
            f"The asset values' key file {path} has mode {oct(mode & 0o777)}: other users could read "
            f"or replace it. `chmod 600 {path}` (or set ${KEY_ENV})."
        )
    key = path.read_text().strip()
    if len(key) < MIN_KEY_CHARS:
        raise ExperimentInputError(
            f"The asset values' key file {path} holds {len(key)} characters, fewer than "
            f"{MIN_KEY_CHARS}: delete it to have a new key generated (stored values are then refused "
            "until they are re-materialized)."
        )
    return key.encode()
