"""Signed asset values: bytes this deployment did not write are refused before unpickling.

A planted pickle whose payload would create a marker file is written straight to the asset's path,
in a local folder and in a real S3-compatible server (SeaweedFS); the marker never appears.
"""

import os
import pickle
import stat
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.signing import KEY_ENV, KEY_FILE_NAME, UntrustedValueError
from experiments_dagster.defs.io_manager import CachedPickleIOManager, ExperimentIOManager, ValueCache
from experiments_dagster_tests.s3server import S3Server, WeedNotFoundError, start_s3_server

KEY = "small/v1"
NAME = "table/small/v1"  # the value's path under the IO manager's base
TEST_KEY = b"test-only-values-key-0123456789abcdef"
OTHER_KEY = b"another-deployments-key-0123456789abcdef"
versions = dg.DynamicPartitionsDefinition(name="versions")


@dg.asset(partitions_def=versions)
def table() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3]})


@dg.asset(partitions_def=versions)
def total(table: pd.DataFrame) -> int:
    return int(table["x"].sum())


class Payload:
    """A pickle that creates ``marker`` when it is unpickled (what an attacker would plant)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def planted(marker: Path) -> bytes:
    """The attacker's bytes; unpickling them does create the marker (checked on a decoy path)."""
    decoy = marker.with_name("decoy-" + marker.name)
    pickle.loads(pickle.dumps(Payload(decoy)))
    assert decoy.exists()  # so the absence of ``marker`` below means: never unpickled
    decoy.unlink()
    return pickle.dumps(Payload(marker), protocol=4)


def contexts() -> tuple[dg.OutputContext, dg.InputContext]:
    defn = dg.StaticPartitionsDefinition([KEY])
    out = dg.build_output_context(
        asset_key=dg.AssetKey("table"), partition_key=KEY, asset_partitions_def=defn
    )
    inp = dg.build_input_context(asset_key=dg.AssetKey("table"), partition_key=KEY, asset_partitions_def=defn)
    return out, inp


def refusal(base: str, why: str) -> str:
    return f"Refused the stored value of asset 'table' partition 'small/v1' at {base}/{NAME}: {why}"


FIX = "Materialize 'table' for partition 'small/v1' again (and the assets downstream of it)"


# --- a local folder ----------------------------------------------------------------------------


def test_a_pickle_planted_in_the_folder_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    out, inp = contexts()
    ours = CachedPickleIOManager(str(tmp_path / "values"), ValueCache(2**20), TEST_KEY)
    ours.handle_output(out, pd.DataFrame({"x": [1]}))
    (tmp_path / "values" / NAME).write_bytes(planted(marker))  # over our own value, as a data-folder writer
    with pytest.raises(UntrustedValueError) as exc:
        ours.load_input(inp)
    assert refusal(str(tmp_path / "values"), "it carries no signature of this project") in str(exc.value)
    assert FIX in str(exc.value)
    assert not marker.exists()


def test_a_planted_value_fails_the_run_that_loads_it_and_never_runs(instance, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, TEST_KEY.decode())
    marker = tmp_path / "payload-ran"
    instance.add_dynamic_partitions("versions", [KEY])
    storage = Path(instance.storage_directory())
    io_manager = ExperimentIOManager()
    assert dg.materialize(
        [table, total], instance=instance, partition_key=KEY, resources={"io_manager": io_manager}
    ).success
    (storage / NAME).write_bytes(planted(marker))
    result = dg.materialize(
        [table, total],
        instance=instance,
        partition_key=KEY,
        resources={"io_manager": io_manager},
        selection=[total],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.cause
    assert failure.cls_name == "UntrustedValueError" and FIX in failure.message
    assert not marker.exists()


@pytest.mark.parametrize("gone", ["module", "class"])
def test_a_value_whose_class_moved_since_names_the_asset_and_the_fix(tmp_path, monkeypatch, gone):
    # A value of a class in a module that later moves (as experiments_dagster.values did).
    module = types.ModuleType("experiments_dagster_moved_values")
    exec("class Splits:\n    def __init__(self, rows):\n        self.rows = rows\n", module.__dict__)
    module.Splits.__module__ = module.__name__
    monkeypatch.setitem(sys.modules, module.__name__, module)
    out, inp = contexts()
    ours = CachedPickleIOManager(str(tmp_path / "values"), ValueCache(0), TEST_KEY)
    ours.handle_output(out, module.Splits(3))
    if gone == "module":
        monkeypatch.delitem(sys.modules, module.__name__)
    else:
        monkeypatch.delattr(module, "Splits")
    with pytest.raises(ExperimentInputError) as exc:
        ours.load_input(inp)
    message = str(exc.value)
    assert message.startswith(
        f"The stored value of asset 'table' partition 'small/v1' at {tmp_path / 'values' / NAME} was "
        "written by another version of this code and cannot be read by this one ("
    )
    assert ("ModuleNotFoundError" if gone == "module" else "AttributeError") in message
    assert message.endswith(f"{FIX} to store it anew.")


@pytest.mark.parametrize("change", ["one byte flipped", "signed with another key", "moved from another path"])
def test_a_changed_signed_value_is_refused(tmp_path, change):
    out, inp = contexts()
    base = tmp_path / "values"
    writer_key = OTHER_KEY if change == "signed with another key" else TEST_KEY
    writer = CachedPickleIOManager(str(base), ValueCache(0), writer_key)
    writer.handle_output(out, pd.DataFrame({"x": [1, 2, 3]}))
    path = base / NAME
    if change == "one byte flipped":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif change == "moved from another path":
        other = base / "table" / "small" / "v2"
        other_out = dg.build_output_context(
            asset_key=dg.AssetKey("table"),
            partition_key="small/v2",
            asset_partitions_def=dg.StaticPartitionsDefinition(["small/v2"]),
        )
        writer.handle_output(other_out, pd.DataFrame({"x": [9]}))
        os.replace(other, path)
    reader = CachedPickleIOManager(str(base), ValueCache(0), TEST_KEY)
    with pytest.raises(UntrustedValueError) as exc:
        reader.load_input(inp)
    assert refusal(str(base), "its signature does not match") in str(exc.value)
    assert FIX in str(exc.value)


# --- the key -----------------------------------------------------------------------------------


def test_without_the_variable_a_local_folder_uses_a_0600_key_file_in_the_instance(instance, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    context = dg.build_init_resource_context(instance=instance)
    first = ExperimentIOManager().create_io_manager(context)
    key_file = Path(instance.root_directory) / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.key == key_file.read_text().strip().encode() and len(first.key) == 64
    assert not str(key_file).startswith(str(first.base_path.path))  # not among the values
    out, inp = contexts()
    first.handle_output(out, pd.DataFrame({"x": [5]}))
    second = ExperimentIOManager().create_io_manager(context)  # another process: same key file
    assert second.key == first.key and second.load_input(inp)["x"].tolist() == [5]


def test_a_key_file_others_can_touch_is_refused(instance, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = Path(instance.root_directory) / KEY_FILE_NAME
    key_file.write_text("k" * 64)
    key_file.chmod(0o620)
    with pytest.raises(ExperimentInputError) as exc:
        ExperimentIOManager().create_io_manager(dg.build_init_resource_context(instance=instance))
    assert f"key file {key_file} has mode 0o620" in str(exc.value) and f"chmod 600 {key_file}" in str(
        exc.value
    )


def test_a_short_key_is_refused(instance, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ExperimentInputError, match=f"\\${KEY_ENV} is 5 characters long; use at least 32"):
        ExperimentIOManager().create_io_manager(dg.build_init_resource_context(instance=instance))


def test_an_object_store_needs_the_variable(instance, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    manager = ExperimentIOManager(base_dir="s3://bucket/values")
    with pytest.raises(
        ExperimentInputError, match=f"\\${KEY_ENV} is not set: asset values in an object store"
    ):
        manager.create_io_manager(dg.build_init_resource_context(instance=instance))
    assert not (Path(instance.root_directory) / KEY_FILE_NAME).exists()


# --- an object store (SeaweedFS) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        server = start_s3_server(tmp_path_factory.mktemp("seaweedfs-signing"))
    except WeedNotFoundError as exc:
        pytest.skip(f"no S3-compatible server for the s3:// tests: {exc}")
    try:
        server.create_bucket("values")
        yield server
    finally:
        server.stop()


def test_a_pickle_planted_in_the_bucket_is_refused_and_never_runs(s3_server, tmp_path):
    marker = tmp_path / "payload-ran"
    base = "s3://values/planted"
    out, inp = contexts()
    ours = CachedPickleIOManager(UPath(base, **s3_server.storage_options), ValueCache(2**20), TEST_KEY)
    ours.handle_output(out, pd.DataFrame({"x": [1]}))
    assert ours.load_input(inp)["x"].tolist() == [1]
    s3_server.filesystem().pipe_file(f"values/planted/{NAME}", planted(marker))  # another S3 client
    with pytest.raises(UntrustedValueError) as exc:
        ours.load_input(inp)  # the stamp changed: read again, verified, refused
    assert refusal(base, "it carries no signature of this project") in str(exc.value)
    assert FIX in str(exc.value)
    assert not marker.exists()
