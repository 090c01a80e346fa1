"""The IO manager: fs_io_manager's paths, atomic writes, no per-call logs, the in-run value cache,
signed values (signing.py; planted or unsigned bytes are refused: test_io_signing.py).

Locally and on a real S3-compatible server (SeaweedFS, started once per session).
"""

import io
import json
import os
import pickle
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from upath import UPath

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster.core.signing import KEY_ENV, verified_payload
from experiments_dagster.defs.checks import LOGGING_CHECKS
from experiments_dagster.defs.definitions import ASSETS, defs
from experiments_dagster.defs.io_manager import (
    CACHE_ENV,
    MISS,
    CachedPickleIOManager,
    ExperimentIOManager,
    ValueCache,
    cache_budget_bytes,
)
from experiments_dagster.defs.partitions import DATASET_VERSIONS
from experiments_dagster.defs.registry_assets import champion_alias_matches_decision
from experiments_dagster.defs.value_store import dump
from experiments_dagster_tests.s3server import S3Server, WeedNotFoundError, start_s3_server

KEY = "small/v1"  # a dataset-version key: the "/" makes a subfolder, as in fs_io_manager
TEST_KEY = b"test-only-values-key-0123456789abcdef"
versions = dg.DynamicPartitionsDefinition(name="versions")


@dataclass(frozen=True)
class Summary:
    rows: int
    total: int


@dg.asset(partitions_def=versions)
def table(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3], "version": context.partition_key})


@dg.asset(partitions_def=versions)
def summary(table: pd.DataFrame) -> Summary:
    return Summary(rows=len(table), total=int(table["x"].sum()))


@dg.asset(partitions_def=versions)
def same_table(table: pd.DataFrame) -> pd.DataFrame:
    return table


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are "preview" in 1.13

    @dg.asset_check(asset=same_table, partitions_def=versions)
    def same_table_has_rows(same_table: pd.DataFrame) -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=len(same_table) == 3)


@dg.asset
def every_table(table: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Unpartitioned, downstream of every partition of ``table``."""
    return {key: int(frame["x"].sum()) for key, frame in table.items()}


@dg.asset(key_prefix=["lab"])
def plain() -> Summary:
    return Summary(rows=1, total=7)


@dg.asset(key_prefix=["lab"])
def plain_total(plain: Summary) -> int:
    return plain.total * 2


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


@pytest.fixture
def storage(instance: dg.DagsterInstance) -> Path:
    return Path(instance.storage_directory())


@pytest.fixture(autouse=True)
def values_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Every IO manager here signs with one known key (the key file: test_io_signing.py)."""
    monkeypatch.setenv(KEY_ENV, TEST_KEY.decode())
    return TEST_KEY


@pytest.fixture
def counted_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every value the IO manager unpickled (after verifying it), by the file or object it read."""
    calls: list[str] = []
    unpickle = CachedPickleIOManager.unpickle

    def counted(self, path, data):
        calls.append(str(path))
        return unpickle(self, path, data)

    monkeypatch.setattr(CachedPickleIOManager, "unpickle", counted)
    return calls


def materialize(instance, assets, io_manager, key=KEY, selection=None, raise_on_error=True):
    if key is not None and key not in instance.get_dynamic_partitions("versions"):
        instance.add_dynamic_partitions("versions", [key])
    return dg.materialize(
        assets,
        instance=instance,
        resources={"io_manager": io_manager},
        partition_key=key,
        selection=selection,
        raise_on_error=raise_on_error,
    )


def contexts(key: str = KEY) -> tuple[dg.OutputContext, dg.InputContext]:
    defn = dg.StaticPartitionsDefinition([key])
    out = dg.build_output_context(
        asset_key=dg.AssetKey("table"), partition_key=key, asset_partitions_def=defn
    )
    inp = dg.build_input_context(asset_key=dg.AssetKey("table"), partition_key=key, asset_partitions_def=defn)
    return out, inp


def read_pickle(path: Path, base: Path):
    """The value stored at ``path`` (under the IO manager's ``base``), its signature checked."""
    name = path.relative_to(base).as_posix()
    return pickle.loads(verified_payload(TEST_KEY, name, path.read_bytes()))


def signed_pickle(obj: object, name: str) -> bytes:
    """What the IO manager stores for ``obj`` at ``name`` (a rewrite by another process of ours)."""
    out = io.BytesIO()
    dump(obj, out, TEST_KEY, name)
    return out.getvalue()


def tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


# --- paths, round trips, compatibility with fs_io_manager -----------------------------------


def test_round_trip_at_fs_io_manager_paths(instance, storage):
    result = materialize(instance, [table, summary], ExperimentIOManager())
    assert result.success
    assert result.output_for_node("summary") == Summary(rows=3, total=6)
    path = storage / "table" / "small" / "v1"
    frame = read_pickle(path, storage)
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"x": [1, 2, 3], "version": KEY}))
    assert read_pickle(storage / "summary" / "small" / "v1", storage) == Summary(rows=3, total=6)
    meta = result.asset_materializations_for_node("table")[0].metadata
    assert meta["storage_path"].value == str(path)
    assert meta["storage_bytes"].value == path.stat().st_size


def test_values_stored_by_fs_io_manager_are_refused_until_rematerialized(instance, storage):
    """The behaviour of values stored before signing: fs_io_manager's unsigned pickles, same paths."""
    assert materialize(instance, [table, summary], dg.FilesystemIOManager(), selection=[table]).success
    result = materialize(
        instance, [table, summary], ExperimentIOManager(), selection=[summary], raise_on_error=False
    )
    assert not result.success
    error = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error
    assert error.cls_name == "DagsterExecutionLoadInputError"
    assert error.cause.cls_name == "UntrustedValueError"
    error = error.cause
    assert (
        f"Refused the stored value of asset 'table' partition 'small/v1' at {storage / 'table' / 'small' / 'v1'}: "
        "it carries no signature of this project, so it was not unpickled" in error.message
    )
    assert (
        "Materialize 'table' for partition 'small/v1' again (and the assets downstream of it)"
        in error.message
    )
    # The fix named: re-materialize, then the downstream asset loads.
    assert materialize(instance, [table, summary], ExperimentIOManager()).output_for_node(
        "summary"
    ) == Summary(rows=3, total=6)


def test_unpartitioned_assets_round_trip(instance, storage):
    result = materialize(instance, [plain, plain_total], ExperimentIOManager(), key=None)
    assert result.output_for_node("lab__plain_total") == 14
    assert read_pickle(storage / "lab" / "plain", storage) == Summary(rows=1, total=7)
    assert read_pickle(storage / "lab" / "plain_total", storage) == 14


def test_an_unpartitioned_asset_loads_every_partition_as_a_dict(instance):
    for key in ("small/v1", "small/v2"):
        materialize(instance, [table], ExperimentIOManager(), key=key)
    result = materialize(
        instance, [table, every_table], ExperimentIOManager(), key=None, selection=[every_table]
    )
    assert result.output_for_node("every_table") == {"small/v1": 6, "small/v2": 6}


grid = dg.MultiPartitionsDefinition(
    {"version": dg.StaticPartitionsDefinition(["v1"]), "dataset": dg.StaticPartitionsDefinition(["iris"])}
)


@dg.asset(partitions_def=grid, key_prefix=["lab"])
def grid_table(context: dg.AssetExecutionContext) -> str:
    return str(context.partition_key)


def stored_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", ["/abs/k", "a/../b", "x..y/./z"])
def test_paths_are_fs_io_managers_for_awkward_partition_keys(instance, tmp_path, key):
    """A leading "/" and ".." segments are escaped exactly as fs_io_manager escapes them."""
    stock, ours = tmp_path / "stock", tmp_path / "ours"
    assert materialize(instance, [table], dg.FilesystemIOManager(base_dir=str(stock)), key=key).success
    result = materialize(instance, [table], ExperimentIOManager(base_dir=str(ours)), key=key)
    assert stored_files(ours) == stored_files(stock) and len(stored_files(ours)) == 1
    assert str(ours) in result.asset_materializations_for_node("table")[0].metadata["storage_path"].value


def test_multi_partition_paths_are_fs_io_managers(instance, tmp_path):
    key = dg.MultiPartitionKey({"version": "v1", "dataset": "iris"})
    for name, manager in [("stock", dg.FilesystemIOManager), ("ours", ExperimentIOManager)]:
        result = dg.materialize(
            [grid_table],
            instance=instance,
            resources={"io_manager": manager(base_dir=str(tmp_path / name))},
            partition_key=key,
        )
        assert result.success
    assert stored_files(tmp_path / "ours") == stored_files(tmp_path / "stock") == ["lab/grid_table/iris/v1"]
    assert read_pickle(tmp_path / "ours" / "lab" / "grid_table" / "iris" / "v1", tmp_path / "ours") == str(
        key
    )


# --- the cache ---------------------------------------------------------------------------


def test_steps_of_a_run_share_the_written_object_without_unpickling(instance, counted_loads):
    result = materialize(instance, [table, same_table, same_table_has_rows], ExperimentIOManager())
    assert result.output_for_node("same_table") is result.output_for_node("table")
    assert [e.passed for e in result.get_asset_check_evaluations()] == [True]  # the check loaded it too
    assert counted_loads == []


def test_a_loaded_value_is_unpickled_once(tmp_path, counted_loads):
    out, inp = contexts()
    CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY).handle_output(
        out, pd.DataFrame({"x": [1, 2]})
    )
    ours = CachedPickleIOManager(str(tmp_path), ValueCache(2**20), TEST_KEY)
    first, second = ours.load_input(inp), ours.load_input(inp)
    assert second is first and first["x"].tolist() == [1, 2]
    assert counted_loads == [str(tmp_path / "table" / "small" / "v1")]


@pytest.mark.parametrize(
    "change",
    [
        "in place, same size, later mtime",  # how fs_io_manager (in another process) rewrites
        "in place, other size, same mtime",
        "renamed over, same size, same mtime",  # how we rewrite: only the inode differs
    ],
)
def test_a_file_rewritten_by_another_process_is_reloaded(tmp_path, counted_loads, change):
    out, inp = contexts()
    ours = CachedPickleIOManager(str(tmp_path), ValueCache(2**20), TEST_KEY)
    ours.handle_output(out, pd.DataFrame({"x": [1, 2, 3]}))
    assert ours.load_input(inp)["x"].tolist() == [1, 2, 3] and counted_loads == []  # cached on write
    path = tmp_path / "table" / "small" / "v1"
    before = path.stat()
    new = pd.DataFrame({"x": [7, 8, 9, 10] if "other size" in change else [7, 8, 9]})
    target = path if change.startswith("in place") else path.with_name("elsewhere")
    target.write_bytes(signed_pickle(new, "table/small/v1"))
    later_ns = 1_000_000 if "later mtime" in change else 0
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + later_ns))
    os.replace(target, path)
    after = path.stat()
    assert (after.st_ino == before.st_ino) == change.startswith("in place")
    assert (after.st_size == before.st_size) == ("same size" in change)
    assert (after.st_mtime_ns == before.st_mtime_ns) == ("same mtime" in change)
    assert ours.load_input(inp)["x"].tolist() == new["x"].tolist()
    assert counted_loads == [str(path)]


def test_budget_evicts_the_least_recently_used_value(tmp_path, counted_loads):
    frames = {key: pd.DataFrame({"x": range(1000 * i, 1000 * i + 1000)}) for i, key in enumerate("abc")}
    ours = CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY)
    for key, frame in frames.items():
        ours.handle_output(contexts(key)[0], frame)
    sizes = {(tmp_path / "table" / key).stat().st_size for key in frames}
    assert len(sizes) == 1
    size = sizes.pop()
    ours.cache = ValueCache(2 * size)  # room for two values
    assert ours.load_input(contexts("a")[1]) is ours.load_input(contexts("a")[1])
    ours.load_input(contexts("b")[1])
    ours.load_input(contexts("a")[1])  # a is now more recent than b
    ours.load_input(contexts("c")[1])  # evicts b
    assert [Path(p).name for p in counted_loads] == ["a", "b", "c"]
    assert ours.cache.used_bytes == 2 * size and len(ours.cache) == 2
    ours.load_input(contexts("a")[1])
    ours.load_input(contexts("b")[1])
    assert [Path(p).name for p in counted_loads] == ["a", "b", "c", "b"]


def test_value_cache_skips_values_bigger_than_the_budget():
    cache = ValueCache(100)
    cache.put("/a", (1, 1, 60), "a")
    cache.put("/big", (2, 1, 101), "big")  # not cached, and evicts nothing
    assert cache.get("/big", (2, 1, 101)) is MISS
    assert cache.get("/a", (1, 1, 60)) == "a" and cache.used_bytes == 60
    cache.put("/a", (3, 2, 101), "a2")  # a bigger new version replaces the old one, uncached
    assert cache.get("/a", (1, 1, 60)) is MISS and cache.used_bytes == 0 and len(cache) == 0


def test_budget_zero_disables_the_cache(instance, monkeypatch, counted_loads):
    monkeypatch.setenv(CACHE_ENV, "0")
    result = materialize(instance, [table, same_table], ExperimentIOManager())
    written, loaded = result.output_for_node("table"), result.output_for_node("same_table")
    assert loaded is not written
    pd.testing.assert_frame_equal(loaded, written)
    assert len(counted_loads) == 1


@pytest.mark.parametrize(
    ("env", "cache_mb", "expected"),
    [
        (None, None, 512 * 2**20),
        ("64", None, 64 * 2**20),
        ("0", None, 0),
        ("64", 3, 3 * 2**20),
        (" 8 ", None, 8 * 2**20),
    ],
)
def test_cache_budget_comes_from_config_then_env_then_512(monkeypatch, env, cache_mb, expected):
    if env is None:
        monkeypatch.delenv(CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_ENV, env)
    assert cache_budget_bytes(cache_mb) == expected


@pytest.mark.parametrize(
    ("env", "cache_mb", "shown"),
    [
        ("lots", None, "$EXPERIMENTS_IO_CACHE_MB='lots'"),
        ("-1", None, "$EXPERIMENTS_IO_CACHE_MB='-1'"),
        (None, -5, "cache_mb='-5'"),
    ],
)
def test_a_bad_cache_budget_names_the_setting(monkeypatch, env, cache_mb, shown):
    if env is not None:
        monkeypatch.setenv(CACHE_ENV, env)
    with pytest.raises(ExperimentInputError, match="whole number of MB") as exc:
        cache_budget_bytes(cache_mb)
    assert shown in str(exc.value)


# --- failures: missing files, interrupted writes --------------------------------------------


def test_a_missing_file_names_asset_partition_path_and_fix(tmp_path):
    _, inp = contexts()
    with pytest.raises(ExperimentInputError) as exc:
        CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY).load_input(inp)
    message = str(exc.value)
    assert (
        f"asset 'table' partition 'small/v1': {tmp_path / 'table' / 'small' / 'v1'} does not exist" in message
    )
    assert "Materialize 'table' for partition 'small/v1' first" in message
    assert isinstance(exc.value.__cause__, FileNotFoundError)


def test_a_run_missing_its_upstream_value_fails_with_that_message(instance):
    result = materialize(
        instance, [table, summary], ExperimentIOManager(), selection=[summary], raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error = failure.step_failure_data.error
    assert error.cause.cls_name == "ExperimentInputError"
    assert "Materialize 'table' for partition 'small/v1' first" in error.cause.message


def test_writes_are_atomic(tmp_path):
    out, inp = contexts()
    ours = CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY)
    ours.handle_output(out, pd.DataFrame({"x": [1, 2, 3]}))
    path = tmp_path / "table" / "small" / "v1"
    before = path.stat()
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        # Fails after the first megabyte has been written to the temporary file.
        ours.handle_output(out, [b"\0" * 2**20, Unpicklable()])
    assert path.stat().st_ino == before.st_ino and path.stat().st_size == before.st_size
    assert ours.load_input(inp)["x"].tolist() == [1, 2, 3]
    assert tmp_files(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "table" / "small").iterdir()) == ["v1"]


def test_a_successful_write_replaces_the_file_and_leaves_no_temporary_files(instance, storage):
    materialize(instance, [table, summary], ExperimentIOManager())
    first = (storage / "table" / "small" / "v1").stat()
    materialize(instance, [table, summary], ExperimentIOManager())
    assert (storage / "table" / "small" / "v1").stat().st_ino != first.st_ino  # renamed over, not rewritten
    assert tmp_files(storage) == []


def test_one_output_for_several_partitions_is_refused(tmp_path):
    defn = dg.StaticPartitionsDefinition(["a", "b"])
    out = dg.build_output_context(
        asset_key=dg.AssetKey("table"),
        asset_partitions_def=defn,
        asset_partition_key_range=dg.PartitionKeyRange("a", "b"),
    )
    with pytest.raises(dg.DagsterInvariantViolationError, match="one output for 2 partitions"):
        CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY).handle_output(out, 1)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_and_readers_see_whole_values(tmp_path):
    """Writers of the same value (other runs) and readers never meet half a pickle."""
    out, inp = contexts()
    values = {n: pd.DataFrame({"writer": [n] * 50_000}) for n in range(3)}
    CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY).handle_output(out, values[0])
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(n: int) -> None:
        ours = CachedPickleIOManager(str(tmp_path), ValueCache(0), TEST_KEY)  # another run's own IO manager
        try:
            for _ in range(5):
                ours.handle_output(contexts()[0], values[n])  # a context per output, as in a run
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        ours = CachedPickleIOManager(str(tmp_path), ValueCache(2**30), TEST_KEY)
        try:
            while not stop.is_set():
                frame = ours.load_input(inp)
                assert frame["writer"].nunique() == 1 and len(frame) == 50_000
                seen.append(int(frame["writer"].iloc[0]))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(n,)) for n in values]
    readers = [threading.Thread(target=read)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(60)
    stop.set()
    for thread in readers:
        thread.join(60)
    assert errors == []
    assert len(seen) > 0 and set(seen) <= set(values)
    assert int(read_pickle(tmp_path / "table" / "small" / "v1", tmp_path)["writer"].iloc[0]) in values
    assert tmp_files(tmp_path) == []


# --- the event log ---------------------------------------------------------------------------


def io_debug_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        e.user_message
        for e in instance.all_logs(run_id)
        if not e.is_dagster_event
        and e.level == 10
        and ("Loading" in e.user_message or "Writing" in e.user_message)
    ]


def test_a_materialization_stores_no_io_debug_logs(instance):
    stock = materialize(instance, [table, summary, same_table], dg.FilesystemIOManager())
    assert len(io_debug_messages(instance, stock.run_id)) >= 5  # what fs_io_manager stores: the probe works
    ours = materialize(instance, [table, summary, same_table], ExperimentIOManager())
    assert ours.success and io_debug_messages(instance, ours.run_id) == []


# --- the code location ---------------------------------------------------------------------


def test_the_code_location_uses_it_as_io_manager():
    assert isinstance(defs.resources["io_manager"], ExperimentIOManager)


@pytest.mark.slow
def test_the_real_graph_runs_on_it_and_unpickles_nothing(instance, resources, storage, counted_loads):
    key = "iris/v1"
    instance.add_dynamic_partitions(DATASET_VERSIONS, [key])
    checks = [*LOGGING_CHECKS, champion_alias_matches_decision]  # the last one loads model_promotion
    result = dg.materialize(
        [*ASSETS, *checks],
        instance=instance,
        resources={**resources, "io_manager": ExperimentIOManager()},
        partition_key=key,
    )
    assert result.success
    assert counted_loads == []  # every input came from the cache
    assert io_debug_messages(instance, result.run_id) == []
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(checks) and all(e.passed for e in evaluations)
    stored = sorted(p.relative_to(storage).as_posix() for p in storage.rglob("v1"))
    assert stored == sorted(f"{a.key.to_user_string()}/{key}" for a in ASSETS)
    assert read_pickle(storage / "splits" / key, storage).run == result.output_for_node("splits").run


# --- on an object store: a real S3-compatible server (SeaweedFS) ---------------------------

BUCKET = "values"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session, on free 127.0.0.1 ports, its data in a temp dir."""
    try:
        server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    except WeedNotFoundError as exc:
        pytest.skip(f"no S3-compatible server for the s3:// tests: {exc}")
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_base(s3_server: S3Server) -> str:
    """A fresh prefix in the bucket, so tests see only their own objects."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS variables pointing at the server (what a deployment would set)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env


def s3_manager(server: S3Server, base: str, budget: int = 2**20) -> CachedPickleIOManager:
    return CachedPickleIOManager(UPath(base, **server.storage_options), ValueCache(budget), TEST_KEY)


def s3_key(base: str, *parts: str) -> str:
    return "/".join([base.removeprefix("s3://"), *parts])


def test_s3_a_partitioned_graph_stores_its_values_in_the_bucket_only(
    instance, storage, s3_server, s3_base, counted_loads
):
    io_manager = ExperimentIOManager(base_dir=s3_base, storage_options=s3_server.storage_options)
    result = materialize(instance, [table, summary], io_manager)
    assert result.success and result.output_for_node("summary") == Summary(rows=3, total=6)
    assert counted_loads == []  # summary got table from the cache, stamped from the store
    fs = s3_server.filesystem()  # an independent client
    assert sorted(fs.find(s3_base)) == [
        s3_key(s3_base, "summary/small/v1"),
        s3_key(s3_base, "table/small/v1"),
    ]
    stored = fs.cat_file(s3_key(s3_base, "summary/small/v1"))
    assert pickle.loads(verified_payload(TEST_KEY, "summary/small/v1", stored)) == Summary(rows=3, total=6)
    meta = result.asset_materializations_for_node("table")[0].metadata
    assert meta["storage_path"].value == f"{s3_base}/table/small/v1"
    assert meta["storage_bytes"].value == fs.info(s3_key(s3_base, "table/small/v1"))["size"] > 0
    # Nothing went to the local folder (Dagster keeps its compute logs there, under the run id).
    assert [f for f in stored_files(storage) if f.split("/")[1:2] != ["compute_logs"]] == []
    assert not (storage / "table").exists() and not (storage / "summary").exists()


def test_s3_credentials_and_endpoint_come_from_the_aws_environment(instance, s3_env, s3_base):
    result = materialize(instance, [plain, plain_total], ExperimentIOManager(base_dir=s3_base), key=None)
    assert result.output_for_node("lab__plain_total") == 14
    assert stored_files_s3(s3_base) == ["lab/plain", "lab/plain_total"]


def test_s3_a_manager_made_after_the_environment_changed_uses_the_new_server(
    instance, s3_env, s3_base, tmp_path, monkeypatch
):
    # The first manager of the process talks to the session's server (its s3fs is made here) ...
    first = materialize(instance, [plain, plain_total], ExperimentIOManager(base_dir=s3_base), key=None)
    assert first.success and stored_files_s3(s3_base) == ["lab/plain", "lab/plain_total"]
    other = start_s3_server(tmp_path / "other-seaweedfs")
    try:
        other.create_bucket(BUCKET)
        for name, value in other.env.items():
            monkeypatch.setenv(name, value)
        # ... and one made once AWS_ENDPOINT_URL names another server writes there, not to the first.
        manager = ExperimentIOManager(base_dir=f"{s3_base}-moved")
        assert materialize(instance, [plain, plain_total], manager, key=None).success
        assert stored_files_s3(f"{s3_base}-moved") == ["lab/plain", "lab/plain_total"]  # on `other`
    finally:
        other.stop()
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    assert stored_files_s3(f"{s3_base}-moved") == []  # nothing went to the session's server


def stored_files_s3(base: str) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)  # from AWS_* only
    prefix = s3_key(base) + "/"
    return sorted(key.removeprefix(prefix) for key in fs.find(base))


READER = """
import json, sys
import dagster as dg
from experiments_dagster.defs.io_manager import ExperimentIOManager
base, key = sys.argv[1], sys.argv[2]
defn = dg.StaticPartitionsDefinition([key])
context = dg.build_init_resource_context()
manager = ExperimentIOManager(base_dir=base).create_io_manager(context)
inp = dg.build_input_context(asset_key=dg.AssetKey("table"), partition_key=key, asset_partitions_def=defn)
print(json.dumps(manager.load_input(inp).to_dict(orient="list")))
"""


@pytest.mark.slow
def test_s3_another_process_loads_what_one_wrote(s3_server, s3_base):
    out, _ = contexts()
    s3_manager(s3_server, s3_base).handle_output(out, pd.DataFrame({"x": [4, 5], "version": KEY}))
    env = {**os.environ, **s3_server.env}
    done = subprocess.run(
        [sys.executable, "-c", READER, s3_base, KEY],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"x": [4, 5], "version": [KEY, KEY]}


def test_s3_a_second_io_manager_loads_and_sees_a_rewrite(s3_server, s3_base, counted_loads):
    out, inp = contexts()
    writer = s3_manager(s3_server, s3_base)
    writer.handle_output(out, pd.DataFrame({"x": [1, 2, 3]}))
    assert writer.load_input(inp)["x"].tolist() == [1, 2, 3] and counted_loads == []  # cached on write
    reader = s3_manager(s3_server, s3_base)  # another run's IO manager: nothing cached
    assert reader.load_input(inp)["x"].tolist() == [1, 2, 3]
    assert reader.load_input(inp) is reader.load_input(inp)  # unpickled once
    path = f"{s3_base}/table/small/v1"
    assert counted_loads == [path]
    fs, key = s3_server.filesystem(), s3_key(s3_base, "table/small/v1")
    before = fs.info(key)
    fs.pipe_file(key, signed_pickle(pd.DataFrame({"x": [7, 8, 9]}), "table/small/v1"))  # same size
    after = fs.info(key)
    assert after["size"] == before["size"] and after["ETag"] != before["ETag"]
    assert writer.load_input(inp)["x"].tolist() == [7, 8, 9]
    assert reader.load_input(inp)["x"].tolist() == [7, 8, 9]
    assert counted_loads == [path, path, path]


def test_s3_a_missing_value_names_asset_partition_url_and_fix(s3_server, s3_base):
    _, inp = contexts()
    with pytest.raises(ExperimentInputError) as exc:
        s3_manager(s3_server, s3_base).load_input(inp)
    message = str(exc.value)
    assert f"asset 'table' partition 'small/v1': {s3_base}/table/small/v1 does not exist" in message
    assert "Materialize 'table' for partition 'small/v1' first" in message
    assert isinstance(exc.value.__cause__, FileNotFoundError)


def test_s3_a_failing_pickle_leaves_the_stored_object(s3_server, s3_base):
    out, inp = contexts()
    ours = s3_manager(s3_server, s3_base, budget=0)
    ours.handle_output(out, pd.DataFrame({"x": [1, 2, 3]}))
    fs, key = s3_server.filesystem(), s3_key(s3_base, "table/small/v1")
    before = fs.info(key)
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        ours.handle_output(contexts()[0], [b"\0" * 2**20, Unpicklable()])
    assert fs.info(key)["ETag"] == before["ETag"]
    assert ours.load_input(inp)["x"].tolist() == [1, 2, 3]
    assert fs.find(s3_base) == [key]


def test_s3_storage_options_are_refused_for_a_local_folder(tmp_path):
    manager = ExperimentIOManager(base_dir=str(tmp_path), storage_options={"key": "k"})
    with pytest.raises(ExperimentInputError, match="storage_options are for an object-store base_dir"):
        manager.create_io_manager(dg.build_init_resource_context())
