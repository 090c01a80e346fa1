"""Records are data: what an MLflow run or its manifest says is looked up or compared, never
imported, called or obeyed (issue 26, "Records are data")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments_dagster.cli import main as cli
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.versioning import config_hash
from experiments_dagster.tracking.reproduce import logged_spec
from experiments_dagster.tracking.store import Tracker
from experiments_dagster_tests.test_reproduction import manifest_for, record_run

PAYLOAD = """
from pathlib import Path
Path(__file__).with_name("payload-ran").write_text("imported")
class Boom:
    def __init__(self):
        Path(__file__).with_name("payload-ran").write_text("called")
    def get_params(self):
        return {}
"""


def no_run_left_running(client: MlflowClient) -> None:
    for experiment in client.search_experiments():
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        assert running == [], [r.info.run_id for r in running]


def test_audit_looks_model_type_up_and_never_imports_it(tmp_path: Path, tracking_uri: str):
    """Each of these model_type params once made the audit import and call it: exit 0 with no
    output (sys.exit), an abort (os.abort), a debugger prompt (pdb.set_trace), or code of a
    module in the working directory (on sys.path under ``python -m``)."""
    (tmp_path / "payload_module.py").write_text(PAYLOAD)
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id("hostile")
    names = ("payload_module.Boom", "sys.exit", "os.abort", "pdb.set_trace", "builtins.breakpoint")
    for name in names:
        run_id = tracker.start_run(experiment, name, {})
        tracker.log_params(run_id, {"model_type": name, "task": "binary"})
        tracker.end_run(run_id)
    done = subprocess.run(
        [sys.executable, "-m", "experiments_dagster.cli.main", "audit", "--experiment", "hostile", "--json"],
        cwd=tmp_path,
        env={
            "MLFLOW_TRACKING_URI": tracking_uri,
            "DAGSTER_HOME": str(tmp_path / "no-dagster-home"),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert len(report["runs"]) == len(names) and report["complete"] is False
    for run in report["runs"]:
        (finding,) = [f for f in run["findings"] if f["kind"] == "hyperparameters"]
        assert finding["status"] == "malformed"
        assert (
            f"model_type {run['run_name']!r} is not a scikit-learn or XGBoost estimator" in finding["detail"]
        )
    assert "(Pdb)" not in done.stdout + done.stderr
    assert not (tmp_path / "payload-ran").exists()
    no_run_left_running(tracker.client)


@pytest.fixture
def original(tracker: Tracker, data_dir: Path) -> tuple[str, dict]:
    """A finished iris run at this checkout's HEAD whose manifest agrees with its params and tags."""
    from experiments_dagster.tracking.environment import git_state

    manifest = manifest_for(data_dir / "iris" / "v1.csv", commit=git_state()["commit"])
    return record_run(tracker, manifest), manifest


def manifest_path(client: MlflowClient, run_id: str) -> Path:
    from experiments_dagster.tracking.audit import local_artifact_root

    return local_artifact_root(client.get_run(run_id).info.artifact_uri) / "manifest.json"


def reproduce(tracking_uri: str, run_id: str, capsys) -> tuple[int, str]:
    code = cli.main(["reproduce", run_id, "--tracking-uri", tracking_uri])
    return code, capsys.readouterr().err


def runs_of(client: MlflowClient) -> set[str]:
    return {r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda m: m["spec"].update(registered_model_name="other_team_model"), "spec (config.hash)"),
        (lambda m: m["spec"].update(experiment_name="another-experiment"), "spec (config.hash)"),
        (lambda m: m["dataset"].update(dataset="breast_cancer"), "dataset.dataset"),
        (lambda m: m["dataset"].update(sha256="0" * 64), "dataset.sha256"),
        (lambda m: m["seeds"].update(model=7), "seeds.model"),
        (lambda m: m["code"].update({"git.commit": "HEAD~1"}), "code.git.commit"),
    ],
    ids=["registered-model", "experiment", "dataset", "data-hash", "seed", "git-expression"],
)
def test_reproduce_refuses_a_manifest_that_disagrees_with_its_run(
    original, tracker: Tracker, tracking_uri: str, data_dir: Path, monkeypatch, capsys, edit, named
):
    monkeypatch.setenv("EXPERIMENTS_DATA_DIR", str(data_dir))
    run_id, manifest = original
    edit(manifest)
    manifest_path(tracker.client, run_id).write_text(json.dumps(manifest))
    before = runs_of(tracker.client)

    code, err = reproduce(tracking_uri, run_id, capsys)

    assert code == 2, err
    assert f"The manifest.json of run {run_id} disagrees with the run's own params and tags in: " in err
    assert named in err and "nothing is rerun" in err and "Traceback" not in err
    assert runs_of(tracker.client) == before  # nothing was rerun, nothing logged
    assert tracker.client.search_registered_models() == []  # no model version anywhere
    no_run_left_running(tracker.client)


@pytest.mark.parametrize(
    "text",
    ['{"dataset": ', "[" * 100_000 + "]" * 100_000, '"just a string"', '{"dataset": {"dataset": 1}}'],
    ids=["truncated", "deep", "not-an-object", "wrong-type"],
)
def test_reproduce_exits_2_on_a_manifest_that_is_not_a_manifest(
    original, tracker: Tracker, tracking_uri: str, capsys, text
):
    run_id, _ = original
    manifest_path(tracker.client, run_id).write_text(text)
    code, err = reproduce(tracking_uri, run_id, capsys)
    assert code == 2, err
    assert f"experiments-dagster reproduce: The manifest.json of run {run_id} " in err
    assert ("is not valid JSON" in err) == (text in ('{"dataset": ', "[" * 100_000 + "]" * 100_000))
    assert "Traceback" not in err
    no_run_left_running(tracker.client)


def test_reproduce_of_a_fold_names_its_parent(original, tracker: Tracker, tracking_uri: str, capsys):
    run_id, _ = original
    experiment = tracker.client.get_run(run_id).info.experiment_id
    fold = tracker.start_run(experiment, "fold-0", {}, parent_run_id=run_id)
    tracker.end_run(fold)
    code, err = reproduce(tracking_uri, fold, capsys)
    assert code == 2
    assert f"Run {fold} is a nested run; use its parent {run_id}" in err and "no manifest" not in err
    no_run_left_running(tracker.client)


def test_the_rerun_registers_only_where_the_original_did(
    tracker: Tracker, tracking_uri: str, data_dir: Path, capsys
):
    """A manifest consistent with its run, but a run that registered under another name than the
    config says (its tags were written by the run, the config by whoever edited the file), or that
    registered nothing: refused before anything is rerun, by the command and by the rerun's step."""
    manifest = manifest_for(data_dir / "iris" / "v1.csv")
    manifest["spec"]["registered_model_name"] = "other_team_model"
    run_id = record_run(tracker, manifest, registered="iris_model")
    before = runs_of(tracker.client)
    code, err = reproduce(tracking_uri, run_id, capsys)
    assert code == 2
    assert (
        f"Run {run_id} cannot be reproduced where it was logged: registered model (config "
        "'other_team_model', original run 'iris_model')"
    ) in err and "nothing is rerun" in err
    assert runs_of(tracker.client) == before and tracker.client.search_registered_models() == []
    with pytest.raises(ExperimentInputError, match="registered model .*'other_team_model'.*'iris_model'"):
        logged_spec(tracker.client, run_id)
    manifest["spec"]["registered_model_name"] = None
    unregistered = record_run(tracker, manifest)
    tracker.client.delete_tag(unregistered, "registry.model_name")
    with pytest.raises(
        ExperimentInputError, match="registered model \\(config 'iris_model', original run None\\)"
    ):
        logged_spec(tracker.client, unregistered)
    same = record_run(tracker, manifest, registered="iris_model")
    spec = logged_spec(tracker.client, same)
    assert spec.model_name == "iris_model" and spec.experiment == "iris"
    assert config_hash(spec.model_dump(mode="json")) == config_hash(manifest["spec"])
    no_run_left_running(tracker.client)


class Payload:
    """Unpickling this writes the marker file (what a hostile pickled model would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def log_model_folder(tracker: Tracker, experiment: str, name: str, mlmodel: str, files: dict) -> str:
    """A finished run whose artifacts hold ``model/MLmodel`` and ``files``, as a script could log."""
    import tempfile

    run_id = tracker.start_run(experiment, name, {})
    tracker.log_params(run_id, {"task": "binary"})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "MLmodel").write_text(mlmodel)
        for path, data in files.items():
            (Path(tmp) / path).write_bytes(data)
        tracker.client.log_artifacts(run_id, tmp, "model")
    tracker.end_run(run_id)
    return run_id


def test_audit_loads_no_model_whose_files_choose_the_code(
    tmp_path: Path, tracking_uri: str, monkeypatch, capsys
):
    """A model's MLmodel names the module MLflow imports, the pickle it unpickles and the skops
    types it trusts: the audit reads it first and loads none of these."""
    import pickle

    (tmp_path / "payload_module.py").write_text(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "payload-ran"
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id("hostile-models")
    pyfunc = "flavors:\n  python_function:\n    loader_module: {loader}\n    model_path: model.pkl\n"
    runs = {
        "loader": log_model_folder(
            tracker, experiment, "loader", pyfunc.format(loader="payload_module"), {"model.pkl": b"x"}
        ),
        "pickle": log_model_folder(
            tracker,
            experiment,
            "pickle",
            pyfunc.format(loader="mlflow.sklearn")
            + "  sklearn:\n    pickled_model: model.pkl\n    serialization_format: cloudpickle\n",
            {"model.pkl": pickle.dumps(Payload(marker))},
        ),
        "trusts": log_model_folder(
            tracker,
            experiment,
            "trusts",
            pyfunc.format(loader="mlflow.sklearn")
            + "  sklearn:\n    pickled_model: model.skops\n    serialization_format: skops\n"
            + "    skops_trusted_types: [builtins.exec, posix.system]\n",
            {"model.skops": b"x"},
        ),
        "code-paths": log_model_folder(
            tracker, experiment, "code", pyfunc.format(loader="mlflow.sklearn") + "    code: code\n", {}
        ),
        "alias-bomb": log_model_folder(
            tracker, experiment, "bomb", "a: &a [x, x]\nb: [*a, *a]\n" + pyfunc.format(loader="x"), {}
        ),
    }
    reasons = {
        "loader": "its loader_module 'payload_module' is not one the audit loads",
        "pickle": "it is serialized as 'cloudpickle': unpickling runs code",
        "trusts": "its MLmodel trusts types ['builtins.exec', 'posix.system'] that this project's",
        "code-paths": "it carries code paths, which loading would put on sys.path",
        "alias-bomb": "uses a YAML anchor or alias (line 1)",
    }
    code = cli.main(["audit", "--experiment", "hostile-models", "--tracking-uri", tracking_uri, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    by_id = {run["run_id"]: run for run in report["runs"]}
    for case, run_id in runs.items():
        (finding,) = [f for f in by_id[run_id]["findings"] if f["kind"] == "model"]
        assert finding["status"] == "malformed", case
        assert finding["detail"].startswith(f"runs:/{run_id}/model is not loaded: "), finding
        assert reasons[case] in finding["detail"], (case, finding["detail"])
    assert "payload_module" not in sys.modules
    assert not marker.exists()
    no_run_left_running(tracker.client)


def test_a_run_whose_params_break_a_check_is_reported_and_the_others_audited(tracking_uri: str, capsys):
    tracker = Tracker(tracking_uri)
    experiment = tracker.experiment_id("odd-records")
    odd = {}
    for name, space in (("not-json", "{'max_depth'"), ("a-number", "5"), ("deep", "[" * 100_000)):
        odd[name] = tracker.start_run(experiment, name, {})
        tracker.log_params(odd[name], {"task": "binary", "search.enabled": "true", "search.space": space})
        tracker.end_run(odd[name])
    code = cli.main(["audit", "--experiment", "odd-records", "--tracking-uri", tracking_uri, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and len(report["runs"]) == 3
    for run in report["runs"]:
        (search,) = [f for f in run["findings"] if f["kind"] == "search"]
        assert search["status"] == "malformed" and search["detail"].startswith("cannot be checked: "), search
    no_run_left_running(tracker.client)


def test_promotion_and_drift_score_no_champion_whose_files_choose_the_code(
    tmp_path: Path, tracker: Tracker, monkeypatch
):
    """A registered version whose files carry recorded hashes (anyone who can register can write
    them) but name their own loader: scoring it as champion (promotion, drift) refuses to load it."""
    import tempfile

    from experiments_dagster.experiment.registry import model_metrics
    from experiments_dagster.tracking.model_gate import RefusedModel
    from experiments_dagster.tracking.model_io import digests_tag

    (tmp_path / "payload_module.py").write_text(PAYLOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    client = tracker.client
    run_id = tracker.start_run(tracker.experiment_id("iris"), "hostile champion", {})
    model = client.create_logged_model(client.get_run(run_id).info.experiment_id, source_run_id=run_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "MLmodel").write_text(
            "flavors:\n  python_function:\n    loader_module: payload_module\n    model_path: m.pkl\n"
        )
        (folder / "m.pkl").write_bytes(b"x")
        client.set_logged_model_tags(model.model_id, digests_tag(folder))
        client.log_model_artifacts(model.model_id, str(folder))
    tracker.end_run(run_id)
    client.create_registered_model("iris_model")
    from experiments_dagster.tracking.tags import MODEL_ID

    version = client.create_model_version(
        "iris_model", model.artifact_location, run_id=run_id, tags={MODEL_ID: model.model_id}
    )
    with pytest.raises(RefusedModel, match="its loader_module 'payload_module' is not one the audit loads"):
        model_metrics(client, f"models:/iris_model/{version.version}", None, ("accuracy",))  # type: ignore[arg-type]
    assert not (tmp_path / "payload-ran").exists() and "payload_module" not in sys.modules
    no_run_left_running(client)
