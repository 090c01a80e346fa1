"""The champion that `experiments-dagster run` registers, in MLflow's own hands: loaded by alias and
by id, evaluated and served by MLflow's clients, then promotion still decided on scores; a champion
that cannot be scored blocks promotion visibly; `experiments-dagster serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from experiments_dagster.core.dataset import load_table
from experiments_dagster.core.spec import resolve_spec
from experiments_dagster.experiment.training import PICKLE_ARTIFACT
from experiments_dagster.ml.prepare import prepare_experiment
from experiments_dagster.tracking.audit import local_artifact_root
from experiments_dagster_tests.conftest import SHIPPED_DATA

pytestmark = pytest.mark.slow
CLI = Path(sys.executable).with_name("experiments-dagster")


@dataclass
class Project:
    root: Path
    data: Path
    env: dict[str, str]

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.root / '.mlflow' / 'mlflow.db'}")

    def cli(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def add(self, dataset: str, version_file: str) -> None:
        shutil.copy2(SHIPPED_DATA / dataset / version_file, self.data / dataset / version_file)


def make_project(root: Path, versions: dict[str, list[str]]) -> Project:
    """A data folder with only the named version files; stores beside it (the embedded default)."""
    data = root / "data"
    for dataset, files in versions.items():
        (data / dataset).mkdir(parents=True)
        shutil.copy2(SHIPPED_DATA / dataset / "experiment.yaml", data / dataset / "experiment.yaml")
        for name in files:
            shutil.copy2(SHIPPED_DATA / dataset / name, data / dataset / name)
    (root / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"EXPERIMENTS_DATA_DIR": str(data), "DAGSTER_HOME": str(root / "home")}
    return Project(root, data, env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = make_project(
        tmp_path_factory.mktemp("champion"), {"breast_cancer": ["v1.csv"], "iris": ["v1.csv"], "diabetes": []}
    )
    done = project.cli("run")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return project


def split_of(project: Project, dataset: str, version_file: str) -> tuple[pd.DataFrame, pd.Series]:
    """The version's test split, made again as the run made it (same spec, same seeds)."""
    path = project.data / dataset / version_file
    spec = resolve_spec(dataset, project.data / dataset, {})
    split = prepare_experiment(load_table(path), spec, path).split
    return split.X_test, split.y_test


def parent_run(client: MlflowClient, experiment: str, version: str):
    exp = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs(
        [exp], f"tags.`dataset.version` = '{version}' AND tags.`mlflow.parentRunId` IS NULL"
    )
    return run


# A fresh interpreter that imports nothing of this project: MLflow's clients as a user calls them.
CLIENTS = textwrap.dedent(
    """
    import io, json, sys
    import mlflow, numpy as np, pandas as pd
    uri, name, model_id, csv_path, target, model_type, pos_label, out = sys.argv[1:]
    mlflow.set_tracking_uri(uri)
    data = pd.read_csv(csv_path)
    X = data.drop(columns=[target])
    lines = X.to_csv(index=False).splitlines()
    answers = {}
    for label, model_uri in (("alias", f"models:/{name}@champion"), ("id", f"models:/{model_id}")):
        model = mlflow.pyfunc.load_model(model_uri)
        answers[label] = {
            "batch": np.asarray(model.predict(X)).tolist(),
            "one_row": [np.asarray(model.predict(pd.read_csv(io.StringIO(lines[0] + "\\n" + line)))).tolist()[0]
                        for line in lines[1:]],
            "proba": model.predict(X, params={"predict_method": "predict_proba"}).to_numpy().tolist(),
        }
    config = {"log_model_explainability": False}
    if pos_label:
        config["pos_label"] = pos_label
    mlflow.set_experiment("client-checks")
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            f"models:/{name}@champion", data, targets=target, model_type=model_type, evaluator_config=config
        )
    answers["evaluate"] = {k: float(v) for k, v in result.metrics.items()}
    json.dump(answers, open(out, "w"))
    """
)


def mlflow_clients(project: Project, dataset: str, version_file: str, pos_label: str = "") -> dict:
    """Load, predict and evaluate the dataset's champion with MLflow's clients in a fresh process."""
    spec = resolve_spec(dataset, project.data / dataset, {})
    X_test, y_test = split_of(project, dataset, version_file)
    csv = project.root / f"{dataset}-test.csv"
    X_test.assign(**{spec.target: y_test.to_numpy()}).to_csv(csv, index=False)
    champion = project.client.get_model_version_by_alias(spec.model_name, "champion")
    out = project.root / f"{dataset}-answers.json"
    argv = [sys.executable, "-c", CLIENTS, project.client.tracking_uri, spec.model_name]
    argv += [champion.tags["model.id"], str(csv), spec.target, "classifier", pos_label, str(out)]
    done = subprocess.run(argv, cwd=project.root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def joblib_copy(client: MlflowClient, run_id: str):
    """The run's joblib copy of the fitted pipeline (written by this deployment, in this test)."""
    path = local_artifact_root(client.get_run(run_id).info.artifact_uri) / PICKLE_ARTIFACT
    return joblib.load(path)


@pytest.mark.parametrize(
    ("dataset", "pos_label", "metrics"),
    [
        ("breast_cancer", "malignant", ("roc_auc", "log_loss", "pr_auc")),
        ("iris", "", ("roc_auc_ovr", "log_loss")),
    ],
)
def test_mlflow_clients_on_the_logged_champion_give_the_logged_answers(
    trained: Project, dataset: str, pos_label: str, metrics: tuple[str, ...]
) -> None:
    answers = mlflow_clients(trained, dataset, "v1.csv", pos_label)
    run = parent_run(trained.client, dataset, "v1")
    pipeline = joblib_copy(trained.client, run.info.run_id)
    X_test, _ = split_of(trained, dataset, "v1.csv")
    expected = pipeline.predict(X_test).astype(str).tolist()
    for label in ("alias", "id"):
        assert [str(v) for v in answers[label]["batch"]] == expected
        assert [str(v) for v in answers[label]["one_row"]] == expected  # 1-row frames, gaps and all
        np.testing.assert_allclose(answers[label]["proba"], pipeline.predict_proba(X_test), rtol=0, atol=1e-7)
    for name in metrics:
        assert answers["evaluate"][name] == pytest.approx(run.data.metrics[name], abs=1e-9, rel=0), name
    assert answers["evaluate"]["accuracy_score"] == pytest.approx(run.data.metrics["accuracy"], abs=1e-12)


def test_after_mlflow_clients_loaded_it_promotion_is_still_decided_on_scores(trained: Project) -> None:
    mlflow_clients(trained, "breast_cancer", "v1.csv", "malignant")  # pyfunc by alias and id, evaluate
    client = trained.client
    v1 = client.get_model_version("breast_cancer_model", "1")
    folder = local_artifact_root(client.get_logged_model(v1.tags["model.id"]).artifact_location)
    assert (folder / "registered_model_meta").is_file()  # MLflow's load wrote into the stored model

    trained.add("breast_cancer", "v2.parquet")
    done = trained.cli("run", "--dataset", "breast_cancer")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert re.search(r"breast_cancer/v2\s+SUCCESS", done.stdout)
    v2 = client.get_model_version("breast_cancer_model", "2")
    assert v2.tags["promotion.decision"] in ("promoted", "not promoted")
    assert re.search(r"(beats|does not beat) champion v1 roc_auc=0\.\d+", v2.tags["promotion.reason"])
    audit = trained.cli("audit", "--experiment", "breast_cancer", "--json")
    assert audit.returncode == 0, audit.stdout[-3000:]
    report = json.loads(audit.stdout)
    assert report["complete"] and len(report["runs"]) == 2 and all(r["complete"] for r in report["runs"])

    # MLflow 3's model view: every registered version's LoggedModel carries its test metrics.
    exp = client.get_experiment_by_name("breast_cancer").experiment_id
    mlflow.set_tracking_uri(client.tracking_uri)  # the query as the documentation gives it
    ranked = mlflow.search_logged_models(
        experiment_ids=[exp],
        filter_string="metrics.roc_auc > 0",
        order_by=[{"field_name": "metrics.roc_auc", "ascending": False}],
        output_format="list",
    )
    by_id = {m.model_id: m for m in ranked}
    for version in ("1", "2"):
        model_id = client.get_model_version("breast_cancer_model", version).tags["model.id"]
        run = client.get_run(by_id[model_id].source_run_id)
        linked = {m.key: m.value for m in by_id[model_id].metrics}
        assert linked["roc_auc"] == run.data.metrics["roc_auc"]
        assert linked["cv_roc_auc_mean"] == run.data.metrics["cv_roc_auc_mean"]
        assert {m.dataset_name for m in by_id[model_id].metrics} == {f"breast_cancer@v{version}/test"}
    scores = [{m.key: m.value for m in model.metrics}["roc_auc"] for model in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 2
    # The documented run query for the best complete attempt of a version: no fold or trial run.
    best = mlflow.search_runs(
        experiment_names=["breast_cancer"],
        filter_string="tags.`audit.status` = 'complete' AND attributes.status = 'FINISHED' "
        "AND tags.`dataset.version` = 'v2'",
        order_by=["metrics.roc_auc DESC"],
        max_results=1,
    )
    assert best["run_id"].tolist() == [parent_run(client, "breast_cancer", "v2").info.run_id]
    complete = mlflow.search_runs(
        experiment_names=["breast_cancer"], filter_string="tags.`audit.status` = 'complete'"
    )
    # No nested run has audit.status (MLflow leaves out the column when no run has the tag).
    assert len(complete) == 2 and complete.get("tags.mlflow.parentRunId", pd.Series()).isna().all()


def test_a_champion_that_cannot_be_scored_blocks_promotion_visibly(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"breast_cancer": ["v1.csv"]})
    assert project.cli("run").returncode == 0
    client = project.client
    v1 = client.get_model_version("breast_cancer_model", "1")
    folder = local_artifact_root(client.get_logged_model(v1.tags["model.id"]).artifact_location)
    (folder / "artifacts" / "meta.json").unlink()  # the champion's files are incomplete

    project.add("breast_cancer", "v2.parquet")
    done = project.cli("run")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    row = re.search(r"breast_cancer/v2\s+BLOCKED\s+(.*)", done.stdout)
    assert row, done.stdout[-2000:]
    assert "promotion blocked: champion v1 of breast_cancer_model cannot be loaded" in row.group(1)
    assert "artifacts/meta.json" in row.group(1) and "file missing" in row.group(1)
    assert "move the `champion` alias by hand" in row.group(1)
    assert re.search(r"breast_cancer/v1\s+up to date", done.stdout)
    v2 = client.get_model_version("breast_cancer_model", "2")
    assert v2.tags["promotion.decision"] == "blocked"
    assert str(client.get_model_version_by_alias("breast_cancer_model", "champion").version) == "1"
    run = parent_run(client, "breast_cancer", "v2")
    assert run.info.status == "FINISHED" and run.data.tags["audit.status"] == "complete"

    with dg.DagsterInstance.from_config(str(project.root / "home")) as instance:
        dagster_run = instance.get_run_by_id(run.data.tags["dagster.run_id"])
        assert dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert dagster_run.tags["experiments/promotion"] == "blocked"
        checks = {
            e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data
            for e in instance.all_logs(dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        }
    blocked = checks["promotion_not_blocked"]
    assert not blocked.passed and blocked.severity == dg.AssetCheckSeverity.ERROR
    assert blocked.metadata["champion_version"].value == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, frame: pd.DataFrame) -> list:
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def wait_until_up(port: int, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1][-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise AssertionError(f"the scoring server on port {port} did not answer within {seconds} s")


def serving_processes(port: int) -> list[int]:
    """PIDs whose command line is MLflow's scoring server on ``port``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and b"serve" in argv and str(port).encode() in argv:
            found.append(int(proc.name))
    return found


def test_serve_answers_like_the_pipeline_and_stops_by_pid(trained: Project) -> None:
    port = free_port()
    server = subprocess.Popen(
        [str(CLI), "serve", "--dataset", "iris", "--port", str(port)],
        cwd=trained.root,
        env=trained.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_up(port, server)
        assert any(b"models" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in serving_processes(port))
        pipeline = joblib_copy(trained.client, parent_run(trained.client, "iris", "v1").info.run_id)
        X_test, _ = split_of(trained, "iris", "v1.csv")
        assert post(port, X_test.head(1)) == pipeline.predict(X_test.head(1)).tolist()
        many = pd.concat([X_test] * (1000 // len(X_test) + 1), ignore_index=True).head(1000)
        assert post(port, many) == pipeline.predict(many).tolist()
        gap = X_test.head(1).astype(object)
        gap.iloc[0, 0] = None  # JSON null
        assert post(port, gap) == pipeline.predict(gap.astype(float)).tolist()
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    assert code == 0
    assert "Serving iris_model v1 (champion of iris) at http://127.0.0.1:" in server.stdout.read()
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
    assert serving_processes(port) == []

    none = trained.cli("serve", "--dataset", "diabetes")
    assert none.returncode == 2
    assert "diabetes_model has no `champion` version" in none.stderr
    assert "experiments-dagster run --dataset diabetes" in none.stderr
