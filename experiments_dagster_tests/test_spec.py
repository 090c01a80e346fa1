"""experiment.yaml merged with run-config overrides into one validated spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.spec import (
    DEFAULT_MODEL,
    BusinessValues,
    ExperimentSpec,
    Seeds,
    read_spec_file,
    resolve_spec,
)


def _write_spec(folder: Path, settings: dict | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.yaml"
    path.write_text(settings if isinstance(settings, str) else yaml.safe_dump(settings))
    return path


def test_resolve_spec_merges_yaml_with_overrides(tmp_path: Path) -> None:
    folder = tmp_path / "iris"
    _write_spec(
        folder,
        {
            "target": "species",
            "cv_folds": 4,
            "hyperparameters": {"max_depth": 3},
            "stage": "candidate",
            "seed": 1,
        },
    )

    spec = resolve_spec(
        "iris", folder, {"cv_folds": 3, "seed": None, "model": None, "stage": "production", "test_size": 0.3}
    )

    assert spec.dataset == "iris"
    assert spec.target == "species"
    assert spec.cv_folds == 3  # override wins
    assert spec.seed == 1  # None override ignored, yaml kept
    assert spec.model == DEFAULT_MODEL == "xgboost"  # None override ignored, default kept
    assert spec.stage == "production"
    assert spec.test_size == 0.3
    assert spec.hyperparameters == {"max_depth": 3}
    assert spec.task is None
    assert spec.experiment == "iris"


def test_dataset_argument_wins_over_yaml(tmp_path: Path) -> None:
    _write_spec(tmp_path / "a", {"target": "y", "dataset": "other"})
    assert resolve_spec("a", tmp_path / "a", {}).dataset == "a"


def test_yaml_only_needs_target(tmp_path: Path) -> None:
    _write_spec(tmp_path / "d", "target: y\n")
    spec = resolve_spec("d", tmp_path / "d", {})
    assert (spec.cv_folds, spec.test_size, spec.seed, spec.thresholds) == (5, 0.2, 42, (0.3, 0.5, 0.7))
    assert spec.business_values == BusinessValues(tp=0.0, fp=0.0, tn=0.0, fn=0.0)
    assert (spec.version, spec.stage, spec.tags, spec.positive_class) == ("v0", "development", {}, None)


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = _write_spec(tmp_path / "d", {"target": "y", "learning_rate": 0.1})
    with pytest.raises(ExperimentInputError) as info:
        resolve_spec("d", tmp_path / "d", {})
    message = str(info.value)
    assert f"Experiment settings for 'd' ({path} plus run config) are invalid" in message
    assert "learning_rate: Extra inputs are not permitted" in message


def test_unknown_key_in_overrides_is_rejected(tmp_path: Path) -> None:
    _write_spec(tmp_path / "d", {"target": "y"})
    with pytest.raises(ExperimentInputError, match="cv_fold: Extra inputs are not permitted"):
        resolve_spec("d", tmp_path / "d", {"cv_fold": 3})


def test_unknown_business_value_key(tmp_path: Path) -> None:
    _write_spec(tmp_path / "d", {"target": "y", "business_values": {"tp": 1.0, "gain": 2.0}})
    with pytest.raises(ExperimentInputError, match=r"business_values\.gain: Extra inputs are not permitted"):
        resolve_spec("d", tmp_path / "d", {})


def test_missing_target_is_reported(tmp_path: Path) -> None:
    _write_spec(tmp_path / "d", "")
    with pytest.raises(ExperimentInputError, match="target: Field required"):
        resolve_spec("d", tmp_path / "d", {})


def test_missing_experiment_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "nospec"
    folder.mkdir()
    with pytest.raises(ExperimentInputError) as info:
        resolve_spec("nospec", folder, {"target": "y"})
    assert str(info.value) == (
        f"{folder / 'experiment.yaml'} is missing. Each dataset folder needs an experiment.yaml "
        "with at least `target: <column>`."
    )


def test_invalid_yaml(tmp_path: Path) -> None:
    path = _write_spec(tmp_path / "d", "target: [unclosed\n")
    with pytest.raises(ExperimentInputError, match=re.escape(f"{path} is not valid YAML")):
        read_spec_file(tmp_path / "d")


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = _write_spec(tmp_path / "d", "- target\n- y\n")
    with pytest.raises(
        ExperimentInputError, match=re.escape(f"{path} must be a mapping of settings, got list")
    ):
        read_spec_file(tmp_path / "d")


def test_resolved_seeds_default_to_seed() -> None:
    spec = ExperimentSpec(dataset="d", target="y", seed=11)
    assert spec.resolved_seeds == Seeds(split=11, cv=11, model=11, numpy=11)
    assert ExperimentSpec(dataset="d", target="y").resolved_seeds == Seeds(
        split=42, cv=42, model=42, numpy=42
    )


def test_explicit_seeds_are_used(tmp_path: Path) -> None:
    _write_spec(
        tmp_path / "d", {"target": "y", "seed": 3, "seeds": {"split": 1, "cv": 2, "model": 4, "numpy": 5}}
    )
    spec = resolve_spec("d", tmp_path / "d", {})
    assert spec.resolved_seeds == Seeds(split=1, cv=2, model=4, numpy=5)


def test_partial_seeds_fall_back_to_seed(tmp_path: Path) -> None:
    """Seeds' docstring: 'each defaults to the spec's seed'; resolved_seeds: 'any unset one taken from seed'."""
    _write_spec(tmp_path / "d", {"target": "y", "seed": 3, "seeds": {"split": 7}})
    spec = resolve_spec("d", tmp_path / "d", {})
    assert spec.resolved_seeds == Seeds(split=7, cv=3, model=3, numpy=3)


def test_thresholds_are_sorted_and_deduplicated() -> None:
    spec = ExperimentSpec(dataset="d", target="y", thresholds=[0.7, 0.2, 0.7, 0.45])
    assert spec.thresholds == (0.2, 0.45, 0.7)


@pytest.mark.parametrize("thresholds", [[], [0.0, 0.5], [0.5, 1.0], [1.5], [-0.1]])
def test_thresholds_outside_unit_interval_are_rejected(tmp_path: Path, thresholds: list[float]) -> None:
    _write_spec(tmp_path / "d", {"target": "y", "thresholds": thresholds})
    with pytest.raises(
        ExperimentInputError,
        match=r"thresholds: Value error, thresholds must be a non-empty list of numbers in \(0, 1\)",
    ):
        resolve_spec("d", tmp_path / "d", {})


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"cv_folds": 1}, "cv_folds: Input should be greater than or equal to 2"),
        ({"test_size": 1.0}, "test_size: Input should be less than 1"),
        ({"test_size": 0}, "test_size: Input should be greater than 0"),
        ({"task": "ranking"}, "task: Input should be 'binary', 'multiclass' or 'regression'"),
        ({"search": {"workers": 0}}, "search.workers: Input should be greater than or equal to 1"),
        ({"search": {"workers": 65}}, "search.workers: Input should be less than or equal to 64"),
        ({"search": {"n_trials": 1_000_000}}, "search.n_trials: Input should be less than or equal to 1000"),
        (
            {"search": {"space": {f"p{i}": {"type": "choice", "choices": [1]} for i in range(33)}}},
            "search.space: Dictionary should have at most 32 items after validation",
        ),
        (
            {"search": {"space": {"p": {"type": "choice", "choices": list(range(101))}}}},
            "search.space.p.choices: Tuple should have at most 100 items after validation, not 101",
        ),
    ],
)
def test_out_of_range_settings(tmp_path: Path, override: dict, fragment: str) -> None:
    _write_spec(tmp_path / "d", {"target": "y"})
    with pytest.raises(ExperimentInputError, match=re.escape(fragment)):
        resolve_spec("d", tmp_path / "d", override)


def test_experiment_name_and_business_values_override(tmp_path: Path) -> None:
    _write_spec(tmp_path / "d", {"target": "y", "business_values": {"tp": 5.0}})
    spec = resolve_spec("d", tmp_path / "d", {"experiment_name": "shared", "business_values": {"fn": -3.0}})
    assert spec.experiment == "shared"
    # Sections merge key by key: the launchpad sets one value and keeps the file's others.
    assert spec.business_values == BusinessValues(tp=5.0, fn=-3.0)


def test_spec_is_frozen() -> None:
    spec = ExperimentSpec(dataset="d", target="y")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        spec.cv_folds = 3  # type: ignore[misc]


def test_search_workers_default_to_one(tmp_path: Path) -> None:
    _write_spec(
        tmp_path / "d",
        {"target": "y", "search": {"enabled": True, "space": {"a": {"type": "choice", "choices": [1]}}}},
    )
    assert resolve_spec("d", tmp_path / "d", {}).search.workers == 1
    assert resolve_spec("d", tmp_path / "d", {"search": {"workers": 8}}).search.workers == 8


# --- bounded input: refused in milliseconds, naming the file, before anything is built ---------
ALIAS_BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(9)
    )
    + "target: y\n"
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (ALIAS_BOMB, "uses a YAML anchor or alias (line 1)"),
        ("target: y\nseeds: &s {split: 1}\n", "uses a YAML anchor or alias (line 2)"),
        ("target: y\nhyperparameters: " + "[" * 100_000 + "]" * 100_000 + "\n", "more than 20 levels deep"),
        ("target: y\n" + "".join("  " * i + "a:\n" for i in range(30)), "more than 20 levels deep"),
        ("target: y\n---\ntarget: z\n", "holds 2 YAML documents; it must hold one"),
        ("target: y\ntags: {x: " + "y" * 300_000 + "}\n", "more than the 262,144 bytes a settings file"),
    ],
    ids=["alias-bomb", "anchor", "deep-flow", "deep-block", "two-documents", "too-big"],
)
def test_hostile_experiment_yaml_is_refused_fast_naming_the_file(
    tmp_path: Path, text: str, fragment: str
) -> None:
    import time

    path = _write_spec(tmp_path / "d", text)
    started = time.perf_counter()
    with pytest.raises(ExperimentInputError) as exc:
        resolve_spec("d", tmp_path / "d", {})
    assert time.perf_counter() - started < 0.5
    assert str(exc.value).startswith(str(path)) and fragment in str(exc.value)


def test_a_huge_experiment_yaml_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_spec(tmp_path / "d", "target: y\n")
    with path.open("ab") as f:
        f.truncate(50 * 1024 * 1024)  # 50 MB (sparse): refused from its size, never read
    opened: list[Path] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    with pytest.raises(ExperimentInputError, match=re.escape(f"{path} is 52,428,800 bytes, more than")):
        read_spec_file(tmp_path / "d")
    assert path not in opened


def test_a_settings_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "experiment.yaml").write_bytes(b"target: \xff\xfe\n")
    with pytest.raises(ExperimentInputError, match=re.escape(f"{folder / 'experiment.yaml'} is not UTF-8")):
        read_spec_file(folder)
