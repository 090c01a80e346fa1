"""Reading, hashing and checking a dataset version (experiments_dagster.core.dataset)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments_dagster.core import dataset
from experiments_dagster.core.dataset import (
    FileDigest,
    check_target,
    drop_missing_target,
    hash_file,
    infer_task,
    load_table,
)
from experiments_dagster.core.errors import ExperimentInputError


def _raises_naming(path: Path, *fragments: str):
    """pytest.raises for an ExperimentInputError whose message names ``path``."""
    return pytest.raises(
        ExperimentInputError,
        match=re.escape(str(path)) + "".join(f"(?s:.*){re.escape(f)}" for f in fragments),
    )


# --- hash_file ---------------------------------------------------------------------------


def test_hash_file_matches_hashlib_and_size(tmp_path: Path) -> None:
    payload = b"a,b\n1,2\n3,4\n"
    path = tmp_path / "v1.csv"
    path.write_bytes(payload)

    digest = hash_file(path)

    assert digest == FileDigest(sha256=hashlib.sha256(payload).hexdigest(), size_bytes=len(payload))


def test_hash_file_streams_files_larger_than_one_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "HASH_CHUNK_BYTES", 7)
    payload = bytes(range(256)) * 3 + b"tail"  # 772 bytes: 110 full chunks and a partial one
    path = tmp_path / "big.parquet"
    path.write_bytes(payload)
    reads: list[int] = []
    real_open = open

    class CountingFile:
        def __init__(self, fh):
            self._fh = fh

        def readinto(self, buffer) -> int:
            reads.append(len(buffer))
            return self._fh.readinto(buffer)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

    # Shadow ``open`` in the module only, so the chunk reads can be counted.
    monkeypatch.setattr(
        dataset, "open", lambda p, mode="r", **kw: CountingFile(real_open(p, mode, **kw)), raising=False
    )
    digest = hash_file(path)

    assert digest.sha256 == hashlib.sha256(payload).hexdigest()
    assert digest.size_bytes == 772
    assert set(reads) == {7}
    assert len(reads) == 772 // 7 + 2  # full chunks, the partial one, and the empty read that ends it


def test_hash_file_of_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert hash_file(path) == FileDigest(
        sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", size_bytes=0
    )


def test_hash_changes_with_one_byte(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"x\n1\n")
    b.write_bytes(b"x\n2\n")
    assert hash_file(a).sha256 != hash_file(b).sha256
    assert hash_file(b).sha256 == hashlib.sha256(b"x\n2\n").hexdigest()


# --- load_table --------------------------------------------------------------------------


def test_load_table_reads_csv(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text("num,cat,target\n1.5,a,yes\n,b,no\n3.0,,yes\n")

    frame = load_table(path)

    assert list(frame.columns) == ["num", "cat", "target"]
    assert frame.shape == (3, 3)
    assert frame["num"].tolist()[0] == 1.5
    assert np.isnan(frame["num"].iloc[1])
    assert frame["cat"].isna().tolist() == [False, False, True]
    assert frame["target"].tolist() == ["yes", "no", "yes"]


def test_load_table_reads_parquet(tmp_path: Path) -> None:
    original = pd.DataFrame({"x": [1, 2, 3], "label": ["a", "b", "a"], "f": [0.5, np.nan, 2.0]})
    path = tmp_path / "v2.parquet"
    original.to_parquet(path)

    pd.testing.assert_frame_equal(load_table(path), original)


def test_load_table_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with _raises_naming(path, "does not exist", ".csv, .parquet"):
        load_table(path)


def test_load_table_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_bytes(b"")
    with _raises_naming(path, "is empty (0 bytes)", "header row"):
        load_table(path)


def test_load_table_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "v1.parquet"
    path.write_bytes(b"this is not parquet at all")
    with _raises_naming(path, "could not be read as parquet", "Re-export it as a valid parquet file"):
        load_table(path)


def test_load_table_malformed_csv(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with _raises_naming(path, "could not be read as csv", "ParserError"):
        load_table(path)


def test_load_table_header_over_the_csv_field_limit_names_the_file(tmp_path: Path) -> None:
    """A huge file without line breaks (e.g. 2 GB of one line) fails on its header, in words."""
    path = tmp_path / "v1.csv"
    path.write_text("a" * 300_000 + ",y\n1,2\n")
    with pytest.raises(ExperimentInputError) as exc:
        load_table(path)
    assert str(exc.value) == (
        f"Dataset file {path} could not be read as csv: one field of its header is longer than "
        "131,072 characters (a file without line breaks, or not CSV at all). Re-export it as a valid "
        "csv file."
    )
    assert exc.value.__cause__ is None and "_csv" not in str(exc.value)


def test_load_table_wrong_suffix(tmp_path: Path) -> None:
    path = tmp_path / "v1.xlsx"
    path.write_text("a,b\n1,2\n")
    with _raises_naming(path, "'.xlsx'", "use .csv or .parquet"):
        load_table(path)


def test_load_table_header_only(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text("a,b,target\n")
    with _raises_naming(path, "no rows or no columns"):
        load_table(path)


# --- drop_missing_target -----------------------------------------------------------------


def test_drop_missing_target_counts_and_resets_index() -> None:
    frame = pd.DataFrame({"x": [1, 2, 3, 4, 5], "y": ["a", None, "b", np.nan, "a"]})

    cleaned, dropped = drop_missing_target(frame, "y", Path("d/v1.csv"))

    assert dropped == 2
    assert cleaned["x"].tolist() == [1, 3, 5]
    assert cleaned["y"].tolist() == ["a", "b", "a"]
    assert cleaned.index.tolist() == [0, 1, 2]


def test_drop_missing_target_nothing_missing() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": [0.1, 0.2]})
    cleaned, dropped = drop_missing_target(frame, "y", Path("d/v1.csv"))
    assert dropped == 0
    pd.testing.assert_frame_equal(cleaned, frame)


def test_drop_missing_target_absent_column_lists_columns() -> None:
    frame = pd.DataFrame({"alpha": [1], "beta": [2]})
    path = Path("data/ds/v1.csv")
    with _raises_naming(path, "['alpha', 'beta']", "Set `target`") as info:
        drop_missing_target(frame, "label", path)
    assert "'label'" in str(info.value)


def test_drop_missing_target_all_missing() -> None:
    frame = pd.DataFrame({"x": [1, 2], "y": [np.nan, np.nan]})
    path = Path("data/ds/v1.csv")
    with _raises_naming(path, "'y'", "nothing to train on"):
        drop_missing_target(frame, "y", path)


# --- infer_task --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        (["yes", "no", "yes"], None, "binary"),
        (["a", "b", "c", "a"], None, "multiclass"),
        ([True, False, True], None, "binary"),
        ([0, 1, 1, 0], None, "binary"),
        ([0, 1, 2, 2, 1], None, "multiclass"),
        (list(range(20)), None, "multiclass"),
        (list(range(21)), None, "regression"),
        ([0.5, 1.25, 3.0], None, "regression"),
        ([0.0, 1.0, 0.0], None, "binary"),
        ([1.0, 2.0, 3.0], None, "multiclass"),
        ([float(i) for i in range(50)], None, "regression"),
        (["x", "y", "z"], "category", "multiclass"),
    ],
)
def test_infer_task(values: list, dtype: str | None, expected: str) -> None:
    assert infer_task(pd.Series(values, dtype=dtype)) == expected


# --- check_target ------------------------------------------------------------------------

PATH = Path("data/shop/v3.csv")


def test_check_target_accepts_good_targets() -> None:
    assert check_target(pd.Series(["a"] * 6 + ["b"] * 6), "binary", 5, PATH, "y") is None
    assert check_target(pd.Series([0, 1, 2] * 6), "multiclass", 5, PATH, "y") is None
    assert check_target(pd.Series(np.linspace(0, 1, 10)), "regression", 5, PATH, "y") is None


def test_check_target_single_class() -> None:
    with _raises_naming(PATH, "single class ('only')", "at least two") as info:
        check_target(pd.Series(["only"] * 10), "binary", 5, PATH, "churned")
    assert "Target 'churned'" in str(info.value)


def test_check_target_class_smaller_than_folds_plus_one() -> None:
    y = pd.Series(["a"] * 10 + ["b"] * 5)
    with _raises_naming(PATH, "has 5 rows", "(6)", "Add rows for that class or lower `cv_folds`") as info:
        check_target(y, "binary", 5, PATH, "label")
    assert str(info.value).startswith("Class 'b' of 'label'")


def test_check_target_class_with_exactly_folds_plus_one_rows_passes() -> None:
    assert check_target(pd.Series(["a"] * 10 + ["b"] * 6), "binary", 5, PATH, "label") is None


def test_check_target_non_finite_regression() -> None:
    y = pd.Series([1.0, 2.0, np.inf, 4.0, 5.0, 6.0])
    with _raises_naming(PATH, "1 non-finite or non-numeric", "row 2", "Fix or remove those rows") as info:
        check_target(y, "regression", 2, PATH, "price")
    assert "'price'" in str(info.value)


def test_check_target_non_numeric_regression() -> None:
    y = pd.Series(["1.0", "abc", "3", "x", "5", "6"])
    with _raises_naming(PATH, "2 non-finite or non-numeric", "row 1"):
        check_target(y, "regression", 2, PATH, "price")


def test_check_target_regression_too_few_rows() -> None:
    with _raises_naming(PATH, "has 9 rows", "5 CV folds", "lower `cv_folds`"):
        check_target(pd.Series(np.arange(9.0)), "regression", 5, PATH, "price")


def test_check_target_binary_with_three_classes() -> None:
    y = pd.Series(["a", "b", "c"] * 10)
    with _raises_naming(PATH, "has 3 classes", "set `task: multiclass`") as info:
        check_target(y, "binary", 5, PATH, "kind")
    assert "Task is binary but target 'kind'" in str(info.value)


def test_check_target_unknown_task() -> None:
    with pytest.raises(
        ExperimentInputError, match=r"Unknown task 'ranking'; use one of binary, multiclass, regression"
    ):
        check_target(pd.Series([1, 2]), "ranking", 5, PATH, "y")


# --- read_csv: Arrow where it agrees with the C parser -----------------------------------------

CSV_CASES = {
    "duplicate_columns": "a,a,b\n1,2,3\n4,5,6\n",
    "empty_and_na_strings": 'a,s\n1,""\n2,NA\n3,null\n4,x\n5,\n',
    "mixed_column": "a,m\n1,1\n2,x\n3,2.5\n",
    "booleans": "a,b,c\n1,True,true\n2,False,false\n",
    "quoted_newline": 'a,s\n1,"x\ny"\n2,z\n',
    "dates_stay_text": "a,d\n1,2024-01-02\n2,2024-02-01 10:00:00\n",
    "floats_and_gaps": "a,i\n1e-3,1\n0.1,\n1.7976931348623157e308,3\n",
}


@pytest.mark.parametrize("name", sorted(CSV_CASES))
def test_read_csv_gives_the_c_parsers_frame(tmp_path: Path, name: str) -> None:
    from experiments_dagster.core.dataset import read_csv

    path = tmp_path / f"{name}.csv"
    path.write_text(CSV_CASES[name])
    expected = pd.read_csv(path)
    got = read_csv(path)
    assert got.columns.tolist() == expected.columns.tolist()
    assert got.dtypes.tolist() == expected.dtypes.tolist()
    pd.testing.assert_frame_equal(got, expected)


def test_read_csv_on_the_shipped_datasets(data_dir: Path) -> None:
    from experiments_dagster.core.dataset import read_csv

    files = sorted(data_dir.glob("*/*.csv"))
    assert files
    for path in files:
        pd.testing.assert_frame_equal(read_csv(path), pd.read_csv(path), obj=str(path))


def test_read_csv_ragged_file_keeps_the_c_parsers_error(tmp_path: Path) -> None:
    path = tmp_path / "v1.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ExperimentInputError, match="could not be read as csv: ParserError"):
        load_table(path)


def test_load_table_refuses_a_csv_header_repeating_a_column(tmp_path: Path) -> None:
    """pandas would read the second `alcohol` as `alcohol.1`: the header itself is checked."""
    path = tmp_path / "v1.csv"
    path.write_text("alcohol,ph,alcohol,quality\n1,2,3,good\n4,5,6,bad\n")
    with pytest.raises(ExperimentInputError) as info:
        load_table(path)
    assert str(info.value) == (
        f"Dataset file {path} repeats column names ['alcohol'] in its header; every column needs its own "
        "name (pandas would silently rename the second one to '<name>.1'). Rename or drop the duplicates."
    )
    path.write_text("alcohol,alcohol.1\n1,2\n")  # genuinely distinct names are fine
    assert list(load_table(path).columns) == ["alcohol", "alcohol.1"]


def test_load_table_refuses_a_parquet_schema_repeating_a_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "v1.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], names=["a", "a"]), path)
    with pytest.raises(
        ExperimentInputError, match=re.escape(f"{path} repeats column names ['a'] in its header")
    ):
        load_table(path)


def test_load_table_reads_a_column_whole_not_in_mixed_chunks(tmp_path: Path) -> None:
    """Numbers for a million rows then one word: one type (text) for the column, not numbers and strings.

    The ISO timestamps send the file to pandas' C parser, which reads in chunks of ~800,000 rows by default.
    """
    path = tmp_path / "v1.csv"
    path.write_text("when,code,y\n" + "2024-01-01 10:00:00,1,0\n" * 1_000_000 + "2024-01-02 10:00:00,A1,1\n")
    frame = load_table(path)
    assert {type(v) for v in frame["code"]} == {str}
    assert frame["code"].iloc[-1] == "A1" and frame["code"].iloc[0] == "1"
