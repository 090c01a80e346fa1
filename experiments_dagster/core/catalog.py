"""Finding dataset versions on disk, and turning them into safe partition keys.

One scan (``scan_versions``) finds versions for the sensor and ``experiments-dagster run``, and
``version_file`` applies the same rules again when a step reads the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from experiments_dagster.core.dataset import SUPPORTED_SUFFIXES
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import SPEC_FILE

# Letters, digits, '.', '_' and '-', not starting with a dot: safe as a path part and a key.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# A name becomes a path part under the IO manager's storage (<asset>/<dataset>/<version> plus
# suffixes of temporary files), an MLflow run name and a tag: 100 keeps all of them far from the
# 255-byte file name limit.
MAX_NAME_LENGTH = 100
KEY_SEPARATOR = "/"
NAME_RULE = (
    f"names may use letters, digits, '.', '_' and '-', must not start with a dot and have at most "
    f"{MAX_NAME_LENGTH} characters"
)


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


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dataset or version name, or None if it can."""
    if len(name) > MAX_NAME_LENGTH:
        return f"it has {len(name)} characters, more than {MAX_NAME_LENGTH}"
    if not SAFE_NAME.fullmatch(name) or name in {".", ".."}:
        return "it uses characters other than letters, digits, '.', '_' and '-' or starts with a dot"
    return None


def is_safe_name(name: str) -> bool:
    """True for names of letters, digits, '.', '_' and '-', no leading dot, at most 100 characters."""
    return name_problem(name) is None


def parse_partition_key(key: str) -> tuple[str, str]:
    """(dataset, version) of a partition key, refusing unsafe names."""
    dataset, sep, version = key.partition(KEY_SEPARATOR)
    if not sep or not is_safe_name(dataset) or not is_safe_name(version):
        raise ExperimentInputError(
            f"Partition key {key!r} is not '<dataset>/<version>' made of letters, digits, "
            f"'.', '_' and '-' (at most {MAX_NAME_LENGTH} characters each). Rename the dataset "
            "folder or version file."
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


def _escapes(path: Path, root: Path) -> bool:
    """True if ``path`` (a symlink, or one inside a linked folder) resolves outside ``root``."""
    return not path.resolve().is_relative_to(root)


def version_file(data_dir: Path, key: str) -> DatasetVersion:
    """The one file holding a partition's data (``<version>.csv`` or ``.parquet``), resolved.

    Checked at read time with the scan's rules, so a symlink swapped in after the version was
    discovered is refused too; the path returned is the resolved file that was checked.
    """
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
    root = data_dir.resolve()
    if _escapes(found[0], root):
        raise ExperimentInputError(
            f"Version file {found[0]} is a symlink to {found[0].resolve()}, outside the data directory "
            f"{root}; files outside it are never read. Copy the data into {folder} instead of linking it."
        )
    return DatasetVersion(dataset, version, found[0].resolve())


@dataclass(frozen=True)
class FileState:
    """A version file as seen by one stat call (no reading, no hashing)."""

    version: DatasetVersion
    size: int
    mtime_ns: int

    @property
    def stamp(self) -> list[int]:
        return [self.size, self.mtime_ns]


@dataclass(frozen=True)
class Refusal:
    """An entry of the data directory that looks like a dataset or version but is not used."""

    path: Path
    dataset: str  # the folder's name as it is on disk, safe or not
    reason: str


@dataclass
class Scan:
    """What one pass over the data directory found and refused."""

    files: list[FileState] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    @property
    def versions(self) -> list[DatasetVersion]:
        return [f.version for f in self.files]


# Our own embedded MLflow store lives in the data directory; it is not a dataset.
IGNORED_TOP_LEVEL = {".mlflow"}


def scan_versions(data_dir: Path) -> Scan:
    """Stat every candidate version file of every dataset folder (one with experiment.yaml), sorted.

    Refused, with a reason naming the entry and the fix: unsafe or over-long dataset or version
    names, paths (symlinks) resolving outside ``data_dir``, a version with both .csv and .parquet
    (neither file is used).
    Folders without experiment.yaml and files of other suffixes are not datasets and are ignored.
    Empty files are returned (size 0): the sensor waits for them, a run reports them.
    """
    root = data_dir.resolve()
    scan = Scan()
    if not root.is_dir():
        return scan
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.name in IGNORED_TOP_LEVEL or not folder.is_dir() or not (folder / SPEC_FILE).is_file():
            continue
        reason = folder_refusal(folder, root)
        if reason:
            scan.refused.append(Refusal(folder, folder.name, reason))
            continue
        scan_folder(scan, folder, root)
    return scan


def folder_refusal(folder: Path, root: Path) -> str | None:
    """Why a dataset folder is skipped (an unsafe name, a link out of ``root``), or None."""
    problem = name_problem(folder.name)
    if problem:
        return f"dataset folder {folder.name!r} skipped: {problem}; {NAME_RULE}: rename it"
    if folder.resolve().parent != root:
        return (
            f"dataset folder {folder.name!r} skipped: it resolves outside {root} (to "
            f"{folder.resolve()}); copy the data into the data directory instead of linking it"
        )
    return None


def scan_folder(scan: Scan, folder: Path, root: Path) -> None:
    """Add a dataset folder's version files to ``scan``, and its refused entries."""
    seen: set[str] = set()
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.suffix not in SUPPORTED_SUFFIXES:
            continue
        reason = version_file_refusal(folder, path, root)
        if reason:
            scan.refused.append(Refusal(path, folder.name, reason))
            continue
        if not path.is_file():
            continue  # a folder named like a file
        if path.stem in seen:  # v1.csv sorts before v1.parquet: neither is used
            scan.files = [
                f for f in scan.files if f.version.path.parent != folder or f.version.version != path.stem
            ]
            reason = f"version {folder.name}/{path.stem} has both .csv and .parquet files; keep one"
            scan.refused.append(Refusal(path, folder.name, reason))
            continue
        seen.add(path.stem)
        st = path.stat()
        scan.files.append(FileState(DatasetVersion(folder.name, path.stem, path), st.st_size, st.st_mtime_ns))


def version_file_refusal(folder: Path, path: Path, root: Path) -> str | None:
    """Why a version file is skipped (an unsafe name, a link out of ``root``), or None."""
    problem = name_problem(path.stem)
    if problem:
        shown = path.name if len(path.name) <= 2 * MAX_NAME_LENGTH else f"{path.name[:MAX_NAME_LENGTH]}..."
        return f"version file {folder.name}/{shown!r} skipped: {problem}; {NAME_RULE}: rename it"
    if _escapes(path, root):
        return (
            f"version file {folder.name}/{path.name} skipped: it resolves outside {root} (to "
            f"{path.resolve()}); copy the data into {folder} instead of linking it"
        )
    return None


def discover_versions(data_dir: Path) -> list[DatasetVersion]:
    """Every version ``scan_versions`` accepts (refused entries: see ``scan_versions``)."""
    return scan_versions(data_dir).versions
