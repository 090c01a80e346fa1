"""The checks and comparison behind `experiments-dagster reproduce`, and the experiment identity."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.core.versioning import code_version, config_hash, expected_identity, experiment_key
from experiments_dagster.experiment import reproduce_checks as reproduction
from experiments_dagster.experiment.reproduce_checks import (
    check_commit,
    check_data,
    check_packages,
    compare,
    verdict,
)


def manifest_for(path: Path, commit: str = "0" * 40, dirty: str = "false") -> dict:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "dataset": {"dataset": path.parent.name, "version": path.stem, "path": str(path), "sha256": sha},
        "code": {"git.commit": commit, "git.dirty": dirty},
        "spec": ExperimentSpec(dataset=path.parent.name, target="species").model_dump(mode="json"),
        "seeds": {"split": 42, "cv": 42, "model": 42, "numpy": 42},
    }


def record_run(tracker, manifest: dict, registered: str | None = None) -> str:
    """A finished parent run whose params and tags agree with ``manifest``, which it carries."""
    dataset, code, spec = manifest["dataset"], manifest["code"], manifest["spec"]
    tags = {
        "config.hash": config_hash(spec),
        "git.commit": code["git.commit"],
        "git.dirty": code["git.dirty"],
        "registry.model_name": registered or f"{dataset['dataset']}_model",
    }
    experiment = tracker.experiment_id(spec.get("experiment_name") or dataset["dataset"])
    run_id = tracker.start_run(experiment, f"{dataset['dataset']}@{dataset['version']} #1", tags)
    params = {
        "dataset.name": dataset["dataset"],
        "dataset.version": dataset["version"],
        "data.hash": dataset["sha256"],
        "target": spec["target"],
        **{f"seed.{k}": v for k, v in manifest["seeds"].items()},
    }
    tracker.log_params(run_id, params)
    tracker.log_json(run_id, "manifest.json", manifest)
    tracker.end_run(run_id)
    return run_id


def test_config_hash_follows_what_is_trained_not_when(data_dir: Path):
    base = ExperimentSpec(dataset="iris", target="species").model_dump(mode="json")
    assert config_hash(base) == config_hash(dict(base))
    assert config_hash({**base, "retrain_on_change": True}) == config_hash(base)
    assert config_hash({**base, "hyperparameters": {"max_depth": 2}}) != config_hash(base)
    assert len(code_version()) == 12 and int(code_version(), 16) >= 0
    experiment, key = expected_identity("iris", data_dir / "iris" / "v1.csv", data_dir)
    sha = hashlib.sha256((data_dir / "iris" / "v1.csv").read_bytes()).hexdigest()
    assert experiment == "iris" and key.startswith(sha[:12]) and key.endswith(code_version())
    spec = data_dir / "iris" / "experiment.yaml"
    spec.write_text(spec.read_text() + "cv_folds: 3\n")
    assert expected_identity("iris", data_dir / "iris" / "v1.csv", data_dir)[1] != key
    assert key == experiment_key(sha, key.split("-")[1], code_version())


def test_tampered_or_missing_data_blocks_with_both_hashes(data_dir: Path):
    path = data_dir / "iris" / "v1.csv"
    manifest = manifest_for(path)
    assert check_data(manifest, data_dir) == []
    path.write_text(path.read_text().replace("setosa", "Setosa", 1))
    (finding,) = check_data(manifest, data_dir)
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert finding.blocking and finding.check == "data"
    assert manifest["dataset"]["sha256"] in finding.message and now in finding.message
    assert "restore them from there" in finding.message
    path.unlink()
    (gone,) = check_data(manifest, data_dir)
    assert gone.blocking and "No file for version 'v1'" in gone.message and str(path) in gone.message


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_commit_checks_on_a_test_repository(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    (repo / "a.txt").write_text("1")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD").strip()
    data = tmp_path / "iris" / "v1.csv"
    data.parent.mkdir()
    data.write_text("x\n1\n")
    assert check_commit(manifest_for(data, first), repo, at_commit=False) == []
    (missing,) = check_commit(manifest_for(data, "f" * 40), repo, at_commit=False)
    assert missing.blocking and "f" * 40 in missing.message and str(repo) in missing.message
    (repo / "a.txt").write_text("2")
    git(repo, "commit", "-q", "-am", "two")
    (repo / "a.txt").write_text("3")
    found = check_commit(manifest_for(data, first, dirty="true"), repo, at_commit=False)
    assert [f.blocking for f in found] == [False, False, False]
    assert "dirty working tree" in found[0].message and "--at-commit" in found[1].message
    assert "uncommitted changes" in found[2].message
    assert len(check_commit(manifest_for(data, first), repo, at_commit=True)) == 0


def test_package_differences_warn_and_strict_blocks():
    logged = "numpy==2.0.0\nPandas==2.2.3\nonly_logged==1.0\n"
    installed = "numpy==2.1.0\npandas==2.2.3\nonly-new==0.1\n"
    (warning,) = check_packages(logged, installed, strict=False)
    assert not warning.blocking
    assert "numpy logged 2.0.0, installed 2.1.0" in warning.message
    assert "only-logged logged 1.0, installed not installed" in warning.message
    assert (
        "only-new logged not installed, installed 0.1" in warning.message and "pandas" not in warning.message
    )
    assert check_packages(logged, installed, strict=True)[0].blocking
    assert check_packages(installed, installed, strict=True) == []


def test_comparison_rows_and_verdicts():
    rows = compare(
        ({"max_depth": "3", "seed": "42"}, {"max_depth": "3", "seed": "42"}),
        ({"accuracy": 0.9, "fit_time_seconds": 0.1}, {"accuracy": 0.9, "fit_time_seconds": 0.3}),
    )
    assert [(r.kind, r.name, r.result) for r in rows] == [
        ("param", "max_depth", "identical"),
        ("param", "seed", "identical"),
        ("metric", "accuracy", "identical"),
        ("metric", "fit_time_seconds", "timing (not compared)"),
    ]
    assert verdict(rows) == "identical"
    close = compare(({}, {}), ({"rmse": 1.0}, {"rmse": 1.0 + 1e-12}))
    assert verdict(close) == "within tolerance"
    far = compare(({"n": "1"}, {"n": "2"}), ({"rmse": 1.0}, {"rmse": 1.0 + 1e-6}))
    assert [r.result for r in far] == ["different", "different"] and verdict(far) == "different"
    promotion = compare(({}, {}), ({"baseline_rmse": 3.0, "rmse": 1.0}, {"rmse": 1.0}))
    assert promotion[0].result == "promotion (not rerun)" and verdict(promotion) == "identical"
    missing = compare(({}, {}), ({"rmse": 1.0}, {}))
    assert missing[0].rerun == "(missing)" and verdict(missing) == "different"
    assert "accuracy" in reproduction.format_table(rows)


def test_reproduce_exits_2_on_a_missing_store_an_unknown_run_or_a_run_without_manifest(
    tmp_path: Path, tracker, tracking_uri: str, capsys
):
    from experiments_dagster.cli import main as cli

    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert cli.main(["reproduce", "abc", "--tracking-uri", missing]) == 2
    assert "No MLflow store at" in capsys.readouterr().err
    run_id = tracker.start_run(tracker.experiment_id("iris"), "iris@v1 #1", {})
    assert cli.main(["reproduce", "f" * 32, "--tracking-uri", tracking_uri]) == 2
    assert f"No run '{'f' * 32}'" in capsys.readouterr().err
    assert cli.main(["reproduce", run_id, "--tracking-uri", tracking_uri]) == 2
    assert f"Run {run_id} has no manifest.json" in capsys.readouterr().err


def test_a_rerun_that_fails_is_verdict_rerun_failed_exit_1_and_tagged(
    tmp_path: Path, tracker, data_dir: Path
):
    from experiments_dagster.core.paths import PROJECT_ROOT
    from experiments_dagster.experiment.reproduce import reproduce
    from experiments_dagster.tracking.environment import git_state, installed_requirements

    path = data_dir / "iris" / "v1.csv"
    manifest = manifest_for(path, commit=git_state()["commit"]) | {
        "packages": installed_requirements().splitlines(),
    }
    run_id = record_run(tracker, manifest)
    calls: list[tuple[str, str]] = []

    def rerun(partition_key: str, original: str) -> bool:
        calls.append((partition_key, original))
        return False  # as a rerun whose run ended FAILURE

    report = reproduce(
        tracker.client, run_id, rerun, repo=PROJECT_ROOT, data_dir=data_dir, strict=True, at_commit=False
    )
    assert calls == [("iris/v1", run_id)]
    assert not report.blocked and report.verdict == "rerun failed" and report.exit_code == 1
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["reproduction.last_verdict"] == "rerun failed" and tags["reproduction.last_run_id"] == "none"
    assert any(f.check == "config" for f in report.findings)  # experiment.yaml differs from this spec
