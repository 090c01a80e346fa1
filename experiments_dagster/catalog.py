"""Finding dataset versions on disk, and turning them into safe partition keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from experiments_dagster.errors import ExperimentInputError
from experiments_dagster.ml.dataset import SUPPORTED_SUFFIXES
from experiments_dagster.spec import SPEC_FILE

# Letters, digits, '.', '_' and '-', not starting with a dot: safe as a path part and a key.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
KEY_SEPARATOR = "/"


@dataclass(frozen=True)
class DatasetVersion:
    """One version file of one dataset."""

    dataset: str
    version: str
    path: Path

    @property
    def partition_key(self) -> str:
        return partition_key(self.dataset, self.version)


def partition_key(dataset: str, version: str) -> str:
    """``<dataset>/<version>``, the same shape as the file layout."""
    return f"{dataset}{KEY_SEPARATOR}{version}"


def is_safe_name(name: str) -> bool:
    """True for names made only of letters, digits, '.', '_' and '-' with no leading dot."""
    return bool(SAFE_NAME.fullmatch(name)) and name not in {".", ".."}


def parse_partition_key(key: str) -> tuple[str, str]:
    """(dataset, version) of a partition key, refusing unsafe names."""
    dataset, sep, version = key.partition(KEY_SEPARATOR)
    if not sep or not is_safe_name(dataset) or not is_safe_name(version):
        raise ExperimentInputError(
            f"Partition key {key!r} is not '<dataset>/<version>' made of letters, digits, "
            "'.', '_' and '-'. Rename the dataset folder or version file."
        )
    return dataset, version


def dataset_dir(data_dir: Path, dataset: str) -> Path:
    """The dataset's folder, refusing any name that would resolve outside ``data_dir``."""
    if not is_safe_name(dataset):
        raise ExperimentInputError(f"Dataset name {dataset!r} is not a safe name.")
    path = (data_dir / dataset).resolve()
    if path.parent != data_dir.resolve():
        raise ExperimentInputError(f"Dataset {dataset!r} resolves outside the data directory {data_dir}.")
    return path


def version_file(data_dir: Path, key: str) -> DatasetVersion:
    """The one file holding a partition's data (``<version>.csv`` or ``.parquet``)."""
    dataset, version = parse_partition_key(key)
    folder = dataset_dir(data_dir, dataset)
    found = [folder / f"{version}{s}" for s in SUPPORTED_SUFFIXES if (folder / f"{version}{s}").exists()]
    if not found:
        raise ExperimentInputError(
            f"No file for version {version!r} of dataset {dataset!r}: expected "
            f"{folder / version}.csv or .parquet. Put the file back or delete the partition."
        )
    if len(found) > 1:
        raise ExperimentInputError(
            f"Version {version!r} of {dataset!r} has both {found[0].name} and {found[1].name}; "
            "keep one file per version."
        )
    return DatasetVersion(dataset, version, found[0])


def discover_versions(data_dir: Path) -> list[DatasetVersion]:
    """Every version file of every dataset folder (one with experiment.yaml), sorted.

    Unsafe names are skipped here; the sensor reports them.
    """
    found: list[DatasetVersion] = []
    if not data_dir.is_dir():
        return found
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        if not is_safe_name(folder.name) or not (folder / SPEC_FILE).is_file():
            continue
        seen: set[str] = set()
        for path in sorted(folder.iterdir()):
            # v1.csv and v1.parquet are one version (raw_data then refuses the ambiguity).
            if path.suffix in SUPPORTED_SUFFIXES and path.is_file() and is_safe_name(path.stem):
                if path.stem not in seen:
                    seen.add(path.stem)
                    found.append(DatasetVersion(folder.name, path.stem, path))
    return found


@dataclass(frozen=True)
class FileState:
    """A version file as seen by one stat call (no reading, no hashing)."""

    version: DatasetVersion
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> list[int]:
        return [self.size, self.mtime_ns]


# Our own embedded MLflow store lives in the data directory; it is not a dataset.
IGNORED_TOP_LEVEL = {".mlflow"}


def scan_versions(data_dir: Path) -> tuple[list[FileState], dict[str, str]]:
    """Stat every candidate version file; return them and {path: reason} for rejected entries.

    Rejected: unsafe dataset or version names, and paths (e.g. symlinks) resolving outside
    ``data_dir``. Folders without experiment.yaml and non-data files are ignored silently.
    """
    root = data_dir.resolve()
    found: list[FileState] = []
    rejected: dict[str, str] = {}
    if not root.is_dir():
        return found, rejected
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.name in IGNORED_TOP_LEVEL or not folder.is_dir():
            continue
        if not is_safe_name(folder.name):
            rejected[str(folder)] = (
                f"dataset folder {folder.name!r} skipped: names may use letters, digits, '.', '_' "
                "and '-' and must not start with a dot; rename it"
            )
            continue
        if folder.resolve().parent != root:
            rejected[str(folder)] = f"dataset folder {folder.name!r} skipped: it resolves outside {root}"
            continue
        if not (folder / SPEC_FILE).is_file():
            continue
        seen: set[str] = set()
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.suffix not in SUPPORTED_SUFFIXES:
                continue
            if not is_safe_name(path.stem):
                rejected[str(path)] = (
                    f"version file {folder.name}/{path.name!r} skipped: the version name must use "
                    "letters, digits, '.', '_' and '-' and not start with a dot; rename it"
                )
                continue
            if not path.resolve().is_relative_to(root):
                rejected[str(path)] = f"version file {folder.name}/{path.name} skipped: it resolves outside {root}"
                continue
            if path.stem in seen:
                rejected[str(path)] = (
                    f"version {folder.name}/{path.stem} has both .csv and .parquet files; keep one"
                )
                continue
            seen.add(path.stem)
            st = path.stat()
            if st.st_size > 0:  # an empty file is still being created
                found.append(FileState(DatasetVersion(folder.name, path.stem, path), st.st_size, st.st_mtime_ns))
    return found, rejected
