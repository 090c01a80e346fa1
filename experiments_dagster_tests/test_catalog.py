"""Dataset versions on disk and safe partition keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments_dagster.core.catalog import (
    DatasetVersion,
    dataset_dir,
    discover_versions,
    is_safe_name,
    parse_partition_key,
    partition_key,
    scan_versions,
    version_file,
)
from experiments_dagster.core.errors import ExperimentInputError


def _touch(path: Path, text: str = "a,b\n1,2\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _touch(root / "sales" / "experiment.yaml", "target: y\n")
    _touch(root / "sales" / "v2.parquet", "not read by discovery")
    _touch(root / "sales" / "v1.csv")
    _touch(root / "sales" / "notes.txt")
    _touch(root / "sales" / "v1.json")
    _touch(root / "sales" / ".hidden.csv")
    _touch(root / "sales" / "v 3.csv")
    _touch(root / "sales" / "....csv")
    (root / "sales" / "dir.csv").mkdir()
    _touch(root / "alpha" / "experiment.yaml", "target: y\n")
    _touch(root / "alpha" / "2024-01_rev.b.csv")
    _touch(root / "no_spec" / "v1.csv")
    _touch(root / "bad name" / "experiment.yaml", "target: y\n")
    _touch(root / "bad name" / "v1.csv")
    _touch(root / ".private" / "experiment.yaml", "target: y\n")
    _touch(root / ".private" / "v1.csv")
    _touch(root / "loose.csv")
    return root


def test_discover_versions(data: Path) -> None:
    found = discover_versions(data)
    assert found == [
        DatasetVersion("alpha", "2024-01_rev.b", data / "alpha" / "2024-01_rev.b.csv"),
        DatasetVersion("sales", "v1", data / "sales" / "v1.csv"),
        DatasetVersion("sales", "v2", data / "sales" / "v2.parquet"),
    ]
    assert [v.partition_key for v in found] == ["alpha/2024-01_rev.b", "sales/v1", "sales/v2"]


def test_scan_reports_every_refused_entry(data: Path) -> None:
    reasons = {r.path.relative_to(data.resolve()).as_posix(): r.reason for r in scan_versions(data).refused}
    assert sorted(reasons) == [".private", "bad name", "sales/....csv", "sales/.hidden.csv", "sales/v 3.csv"]
    assert reasons["bad name"].startswith("dataset folder 'bad name' skipped: it uses characters other than")
    assert reasons["sales/.hidden.csv"].startswith("version file sales/'.hidden.csv' skipped: it uses")
    assert reasons["sales/v 3.csv"].endswith("at most 100 characters: rename it")
    # no_spec/ (no experiment.yaml), notes.txt, v1.json and dir.csv are not datasets: not reported
    assert {r.dataset for r in scan_versions(data).refused} == {".private", "bad name", "sales"}


def test_scan_refuses_over_long_names(data: Path) -> None:
    long = "v" * 250
    _touch(data / "sales" / f"{long}.csv")
    (refusal,) = [r for r in scan_versions(data).refused if long in str(r.path)]
    assert "it has 250 characters, more than 100" in refusal.reason
    assert refusal.dataset == "sales"
    assert long not in [v.version for v in discover_versions(data)]
    assert is_safe_name("v" * 100) and not is_safe_name("v" * 101)


def test_scan_refuses_both_formats_of_one_version(data: Path) -> None:
    _touch(data / "sales" / "v1.parquet")
    scan = scan_versions(data)
    assert [v.partition_key for v in scan.versions] == ["alpha/2024-01_rev.b", "sales/v2"]
    assert "version sales/v1 has both .csv and .parquet files; keep one" in [r.reason for r in scan.refused]


def test_scan_refuses_symlinks_out_of_the_data_dir(data: Path, tmp_path: Path) -> None:
    outside = _touch(tmp_path / "elsewhere" / "secret.csv", "a,y\n1,2\n")
    (data / "sales" / "v7.csv").symlink_to(outside)
    (data / "sales" / "v8.csv").symlink_to(data / "sales" / "v1.csv")  # inside: a version like any other
    (data / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _touch(tmp_path / "elsewhere" / "experiment.yaml", "target: y\n")
    scan = scan_versions(data)
    assert "sales/v7" not in [v.partition_key for v in scan.versions]
    assert "sales/v8" in [v.partition_key for v in scan.versions]
    reasons = {r.path.name: r.reason for r in scan.refused}
    assert reasons["v7.csv"] == (
        f"version file sales/v7.csv skipped: it resolves outside {data.resolve()} (to {outside.resolve()}); "
        f"copy the data into {data.resolve() / 'sales'} instead of linking it"
    )
    assert reasons["linked"].startswith(
        f"dataset folder 'linked' skipped: it resolves outside {data.resolve()}"
    )


def test_version_file_refuses_a_symlink_swapped_in_after_discovery(data: Path, tmp_path: Path) -> None:
    assert "sales/v1" in [v.partition_key for v in discover_versions(data)]
    outside = _touch(tmp_path / "passwd.csv", "root:x:0:0\n")
    (data / "sales" / "v1.csv").unlink()
    (data / "sales" / "v1.csv").symlink_to(outside)
    with pytest.raises(ExperimentInputError) as info:
        version_file(data, "sales/v1")
    assert str(info.value) == (
        f"Version file {(data / 'sales').resolve() / 'v1.csv'} is a symlink to "
        f"{outside.resolve()}, outside the data directory {data.resolve()}; files outside it are never "
        f"read. Copy the data into {(data / 'sales').resolve()} instead of linking it."
    )


def test_discover_versions_of_missing_dir(tmp_path: Path) -> None:
    assert discover_versions(tmp_path / "absent") == []


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("v1", True),
        ("2024-01_rev.b", True),
        ("-x", True),
        (".", False),
        ("..", False),
        (".hidden", False),
        ("a b", False),
        ("a/b", False),
        ("a\\b", False),
        ("", False),
        ("naïve", False),
        ("v1\n", False),
    ],
)
def test_is_safe_name(name: str, safe: bool) -> None:
    assert is_safe_name(name) is safe


@pytest.mark.parametrize(
    ("dataset", "version"), [("iris", "v1"), ("breast_cancer", "v2.1"), ("a-b", "2024-01-01")]
)
def test_partition_key_round_trip(dataset: str, version: str) -> None:
    key = partition_key(dataset, version)
    assert key == f"{dataset}/{version}"
    assert parse_partition_key(key) == (dataset, version)


@pytest.mark.parametrize(
    "key", ["iris", "iris/", "/v1", "../v1", "iris/..", "a/b/c", "iris/v 1", ".x/v1", "iris/v1\n"]
)
def test_parse_partition_key_refuses_unsafe(key: str) -> None:
    with pytest.raises(
        ExperimentInputError, match=re.escape(f"Partition key {key!r} is not '<dataset>/<version>'")
    ):
        parse_partition_key(key)


def test_version_file_finds_csv_or_parquet(data: Path) -> None:
    assert version_file(data, "sales/v1") == DatasetVersion(
        "sales", "v1", (data / "sales" / "v1.csv").resolve()
    )
    assert version_file(data, "sales/v2").path.name == "v2.parquet"


def test_version_file_with_both_formats(data: Path) -> None:
    _touch(data / "sales" / "v1.parquet")
    with pytest.raises(ExperimentInputError) as info:
        version_file(data, "sales/v1")
    assert str(info.value) == (
        "Version 'v1' of 'sales' has both v1.csv and v1.parquet; keep one file per version."
    )


def test_version_file_with_no_file(data: Path) -> None:
    folder = (data / "sales").resolve()
    with pytest.raises(ExperimentInputError) as info:
        version_file(data, "sales/v9")
    message = str(info.value)
    assert "No file for version 'v9' of dataset 'sales'" in message
    assert f"expected {folder / 'v9'}.csv or .parquet" in message
    assert "Put the file back or delete the partition" in message


def test_version_file_refuses_traversal_key(data: Path) -> None:
    with pytest.raises(ExperimentInputError, match="is not '<dataset>/<version>'"):
        version_file(data, "../sales/v1")


def test_dataset_dir(data: Path) -> None:
    assert dataset_dir(data, "sales") == (data / "sales").resolve()


@pytest.mark.parametrize("name", ["..", ".", "../data", "sales/../..", "/etc", ""])
def test_dataset_dir_refuses_unsafe_names(data: Path, name: str) -> None:
    with pytest.raises(ExperimentInputError, match=re.escape(f"Dataset name {name!r} is not a safe name.")):
        dataset_dir(data, name)


def test_dataset_dir_refuses_symlink_out_of_data_dir(data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (data / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExperimentInputError) as info:
        dataset_dir(data, "link")
    assert str(info.value) == f"Dataset 'link' resolves outside the data directory {data}."
