"""PooledSqliteEventLogStorage: the stock SQLite event log, same files, engines kept per file."""

import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage

from experiments_dagster import dagster_storage
from experiments_dagster.dagster_storage import MAX_RUN_ENGINES, PooledSqliteEventLogStorage
from experiments_dagster.paths import PROJECT_ROOT

parts = dg.DynamicPartitionsDefinition(name="versions")


@dg.asset(partitions_def=parts)
def numbers(context: dg.AssetExecutionContext) -> list[int]:
    return [len(context.partition_key)]


@dg.asset(partitions_def=parts)
def total(numbers: list[int]) -> int:
    return sum(numbers)


def _event(run_id: str, message: str) -> EventLogEntry:
    return EventLogEntry(
        error_info=None, level="INFO", user_message=message, run_id=run_id, timestamp=time.time(), dagster_event=None
    )


def _messages(storage, run_id: str) -> list[str]:
    return [record.event_log_entry.user_message for record in storage.get_records_for_run(run_id).records]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME with the shipped dagster.yaml."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_shipped_instance_uses_it_on_the_default_directory(home: Path):
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        assert type(storage) is PooledSqliteEventLogStorage
        assert Path(storage._base_dir) == home / "history" / "runs"  # where the stock default keeps them
        assert (home / "history" / "runs" / f"{INDEX_SHARD_NAME}.db").is_file()


def test_materializations_readable_by_the_stock_storage_and_the_other_way_round(home: Path):
    defs = dg.Definitions(assets=[numbers, total])
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("versions", ["v1", "version-22"])
        job = defs.resolve_implicit_global_asset_job_def()
        results = [job.execute_in_process(partition_key=k, instance=instance) for k in ("v1", "version-22")]
        assert all(r.success for r in results)
        assert instance.event_log_storage._engines  # engines were kept, not rebuilt per statement

    # Another process with Dagster's own class (e.g. an older webserver) sees the same history.
    stock = SqliteEventLogStorage(str(home / "history" / "runs"))
    for result in results:
        assert _messages(stock, result.run_id) == [
            e.user_message for e in dg.DagsterInstance.get().all_logs(result.run_id)
        ]
    record = stock.get_latest_materialization_events([dg.AssetKey("total")])[dg.AssetKey("total")]
    assert record.dagster_event.partition == "version-22"
    assert stock.get_dynamic_partitions("versions") == ["v1", "version-22"]

    stock.store_event(_event(results[0].run_id, "written by the stock class"))
    pooled = PooledSqliteEventLogStorage(str(home / "history" / "runs"))
    assert _messages(pooled, results[0].run_id)[-1] == "written by the stock class"
    assert pooled.has_dynamic_partition("versions", "version-22")
    assert not pooled.has_dynamic_partition("versions", "v3")


def test_engines_are_bounded_and_the_index_is_kept(tmp_path: Path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    run_ids = [f"run-{i}" for i in range(MAX_RUN_ENGINES + 5)]
    for run_id in run_ids:
        storage.store_event(_event(run_id, run_id))
        storage.has_dynamic_partition("versions", "v1")
    kept = list(storage._engines)
    assert INDEX_SHARD_NAME in kept
    assert sorted(k for k in kept if k != INDEX_SHARD_NAME) == sorted(run_ids[-MAX_RUN_ENGINES:])
    for run_id in run_ids:  # evicted runs reopen on demand
        assert _messages(storage, run_id) == [run_id]


def test_threads_share_it_without_losing_events(tmp_path: Path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))

    def write(worker: int) -> None:
        for i in range(25):
            storage.store_event(_event("shared-run", f"{worker}-{i}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(_messages(storage, "shared-run")) == sorted(f"{w}-{i}" for w in range(4) for i in range(25))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connections(tmp_path: Path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    storage.store_event(_event("parent-run", "before fork"))
    inherited = storage._engines["parent-run"]
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's pooled sqlite connections
        code = 0
        try:
            if storage._engines:
                code = 3
            storage.store_event(_event("parent-run", "from child"))
            if storage._engines.get("parent-run") is inherited:
                code = 4
        except BaseException:
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    storage.store_event(_event("parent-run", "after fork"))
    assert _messages(storage, "parent-run") == ["before fork", "from child", "after fork"]
    assert storage._engines["parent-run"] is inherited  # the parent's engine is untouched


def test_wipe_closes_engines_and_the_storage_stays_usable(tmp_path: Path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    storage.store_event(_event("run-a", "one"))
    storage.wipe()
    assert not (tmp_path / "runs" / "run-a.db").exists()
    assert "run-a" not in storage._engines
    assert _messages(storage, "run-a") == []
    storage.store_event(_event("run-a", "two"))
    assert _messages(storage, "run-a") == ["two"]
    storage.dispose()
    assert storage._engines == {}


def test_without_base_dir_or_dagster_home_the_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(ValueError, match="set DAGSTER_HOME or give event_log_storage.config.base_dir"):
        PooledSqliteEventLogStorage()
    assert dagster_storage.default_base_dir.__doc__


def _shard_facts(path: Path) -> tuple[list, list, str]:
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return schema, revision, journal


def test_new_run_database_is_the_one_the_stock_class_creates(tmp_path: Path):
    SqliteEventLogStorage(str(tmp_path / "stock")).store_event(_event("run-1", "x"))
    pooled = PooledSqliteEventLogStorage(str(tmp_path / "pooled"))
    pooled.store_event(_event("run-1", "x"))
    stock_facts = _shard_facts(tmp_path / "stock" / "run-1.db")
    assert stock_facts[1] and stock_facts[2] == "wal"  # stamped at head, WAL: what the stock code writes
    assert _shard_facts(tmp_path / "pooled" / "run-1.db") == stock_facts
    # ... and the stock class's own revision check accepts it
    stock_reader = SqliteEventLogStorage(str(tmp_path / "pooled"))
    assert _messages(stock_reader, "run-1") == ["x"]


def test_processes_initializing_one_run_database_at_once(tmp_path: Path):
    """Separate storages (separate engines, like separate processes) racing to create one file."""
    storages = [PooledSqliteEventLogStorage(str(tmp_path / "runs")) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(storages))

    def write(i: int) -> None:
        barrier.wait()
        try:
            storages[i].store_event(_event("raced-run", f"from {i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(storages))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(_messages(storages[0], "raced-run")) == [f"from {i}" for i in range(4)]
    assert len(_shard_facts(tmp_path / "runs" / "raced-run.db")[1]) == 1  # stamped once
