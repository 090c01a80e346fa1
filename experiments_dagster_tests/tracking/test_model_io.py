"""The logged pyfunc model: exact predictions, trusted types fixed in code, verified file hashes."""

from __future__ import annotations

import fractions
import json
import shutil
import urllib.parse
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from mlflow.entities import LoggedModelStatus

from experiments_dagster.ml.training import estimator_of, make_pipeline
from experiments_dagster.tracking.audit import Auditor
from experiments_dagster.tracking.model_io import (
    FILES_SHA256_TAG,
    ModelVerificationError,
    UntrustedTypeError,
    UnverifiableModelError,
    file_digests,
    load_verified_model,
    save_pyfunc_model,
    trusted_types,
)
from experiments_dagster.tracking.store import Tracker

CITIES = [f"city{i:02d}" for i in range(40)]  # more than MAX_CATEGORIES: an infrequent group


def mixed_frame(n: int, seed: int) -> pd.DataFrame:
    """Numbers with gaps, categories with NaN and None, booleans."""
    rng = np.random.default_rng(seed)
    weights = np.linspace(3, 1, len(CITIES))
    return pd.DataFrame(
        {
            "x": np.where(rng.random(n) < 0.2, np.nan, rng.normal(3, 2, n)),
            "count": rng.integers(0, 50, n),
            "city": rng.choice(CITIES, n, p=weights / weights.sum()).astype(object),
            "color": rng.choice(np.array(["red", "green", "blue", None, np.nan], dtype=object), n),
            "flag": rng.random(n) < 0.4,
        }
    )


def frames(task: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    X = mixed_frame(400, 0)
    signal = X["x"].fillna(3) + (X["color"] == "red") * 2 + X["flag"] * 1.5 + X["count"] / 25
    y = {
        "regression": signal + np.random.default_rng(1).normal(0, 0.3, len(X)),
        "binary": pd.Series(np.where(signal > 4.5, "yes", "no")),
        "multiclass": pd.Series(np.select([signal < 3.5, signal < 5.5], ["lo", "mid"], "hi")),
    }[task]
    test = mixed_frame(80, 7)
    test.loc[:4, "city"] = "atlantis"  # unseen at fit
    test.loc[5:9, "color"] = None
    test.loc[10:14, "color"] = np.nan
    return X, y, test


def fitted(task: str, model: str = "xgboost", params: dict | None = None):
    X, y, test = frames(task)
    params = params if params is not None else ({"n_estimators": 20} if model == "xgboost" else {})
    return make_pipeline(X, task, model, params, 0).fit(X, y), test


def new_run(tracker: Tracker) -> str:
    return tracker.start_run(tracker.experiment_id("exp"), "r", {"dagster.run_id": "d1"})


def stored_dir(tracker: Tracker, model_id: str) -> Path:
    """The model's folder in the (local) artifact store."""
    location = tracker.client.get_logged_model(model_id).artifact_location
    return Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))


@pytest.fixture
def logged_rf(tracker: Tracker):
    pipeline, test = fitted("binary", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 10})
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, test)
    return model_id, pipeline, test


@pytest.mark.parametrize(
    ("task", "model"),
    [
        ("binary", "xgboost"),
        ("multiclass", "xgboost"),
        ("regression", "xgboost"),
        ("multiclass", "sklearn.ensemble.RandomForestClassifier"),
    ],
)
def test_logged_model_loads_verified_and_predicts_exactly_like_the_pipeline(
    tracker: Tracker, task: str, model: str
):
    pipeline, test = fitted(task, model)
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, test)

    logged = tracker.client.get_logged_model(model_id)
    assert logged.status == LoggedModelStatus.READY
    folder = stored_dir(tracker, model_id)
    recorded = json.loads(logged.tags[FILES_SHA256_TAG])
    assert recorded == file_digests(folder)  # every stored file, nothing else
    native = "artifacts/estimator.ubj" if model == "xgboost" else "artifacts/estimator.skops"
    assert {
        "MLmodel",
        "pyfunc_model.py",
        "requirements.txt",
        "input_example.json",
        native,
        "artifacts/preprocessor.skops",
        "artifacts/meta.json",
    } <= set(recorded)
    assert not any(name.endswith((".pkl", ".pickle", ".json.state")) for name in recorded)
    meta = json.loads((folder / "artifacts" / "meta.json").read_text())
    assert not any("trusted" in key for key in meta)
    requirements = (folder / "requirements.txt").read_text().split()
    assert {f"mlflow=={mlflow.__version__}", "xgboost-cpu==3.2.0", f"skops=={_version('skops')}"} <= set(
        requirements
    )

    loaded = load_verified_model(tracker.client, f"models:/{model_id}")
    assert loaded.metadata.signature is not None
    assert len(loaded.input_example) == 5
    np.testing.assert_array_equal(np.asarray(loaded.predict(test)), pipeline.predict(test))
    if task != "regression":
        proba = loaded.predict(test, params={"predict_method": "predict_proba"})
        assert list(proba.columns) == [str(c) for c in pipeline.classes_]
        np.testing.assert_array_equal(proba.to_numpy(), pipeline.predict_proba(test))


def _version(dist: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(dist)


def test_registered_versions_and_aliases_load_verified(tracker: Tracker, logged_rf):
    model_id, pipeline, test = logged_rf
    client = tracker.client
    client.create_registered_model("m")
    logged = client.get_logged_model(
        model_id
    )  # its location and run: nothing resolved through MLflow's global
    version = client.create_model_version(
        "m",
        source=logged.artifact_location,
        run_id=logged.source_run_id,
        model_id=model_id,
        tags={"model.id": model_id},
    ).version
    client.set_registered_model_alias("m", "champion", version)
    for uri in (f"models:/m/{version}", "models:/m@champion"):
        np.testing.assert_array_equal(load_verified_model(client, uri).predict(test), pipeline.predict(test))


def test_a_line_appended_to_the_model_code_is_refused(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    code = stored_dir(tracker, model_id) / "pyfunc_model.py"
    before = file_digests(code.parent)["pyfunc_model.py"]
    with code.open("a") as f:
        f.write("import os  # an attacker's line\n")
    after = file_digests(code.parent)["pyfunc_model.py"]
    with pytest.raises(ModelVerificationError, match="pyfunc_model.py") as err:
        load_verified_model(tracker.client, f"models:/{model_id}")
    assert before in str(err.value) and after in str(err.value)


def test_a_changed_meta_json_is_refused(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    meta = stored_dir(tracker, model_id) / "artifacts" / "meta.json"
    meta.write_text(meta.read_text().replace('"yes"', '"YES"'))
    with pytest.raises(
        ModelVerificationError, match=r"artifacts/meta\.json: recorded sha256 [0-9a-f]{64}, found"
    ):
        load_verified_model(tracker.client, f"models:/{model_id}")


def test_an_added_file_and_a_missing_file_are_refused(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    folder = stored_dir(tracker, model_id)
    (folder / "artifacts" / "extra.py").write_text("print('hi')\n")
    with pytest.raises(
        ModelVerificationError, match=r"artifacts/extra\.py: recorded sha256 none \(file added\)"
    ):
        load_verified_model(tracker.client, f"models:/{model_id}")
    (folder / "artifacts" / "extra.py").unlink()
    (folder / "input_example.json").unlink()
    with pytest.raises(ModelVerificationError, match=r"input_example\.json: .*found none \(file missing\)"):
        load_verified_model(tracker.client, f"models:/{model_id}")


def test_models_without_recorded_hashes_are_refused(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    run_id = tracker.client.get_logged_model(model_id).source_run_id
    with pytest.raises(UnverifiableModelError, match="no recorded file hashes"):
        load_verified_model(tracker.client, f"runs:/{run_id}/model")
    tracker.client.delete_logged_model_tag(model_id, FILES_SHA256_TAG)  # as a model logged before them
    with pytest.raises(UnverifiableModelError, match=f"models:/{model_id} has no recorded file hashes"):
        load_verified_model(tracker.client, f"models:/{model_id}")


def test_meta_json_cannot_add_a_trusted_type(tmp_path: Path):
    pipeline, test = fitted("binary", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 5})
    path = tmp_path / "model"
    save_pyfunc_model(pipeline, test, path)
    # An estimator file holding a type outside the allow-list, and a meta.json that lists it.
    estimator = estimator_of(pipeline)
    estimator.note_ = fractions.Fraction(1, 3)
    skops_file = path / "artifacts" / "estimator.skops"
    sio.dump(estimator, skops_file)
    assert "fractions.Fraction" in sio.get_untrusted_types(file=skops_file)
    trusted_by_name = [*trusted_types(), "fractions.Fraction"]
    assert sio.load(skops_file, trusted=trusted_by_name).note_ == fractions.Fraction(1, 3)  # file is sound
    meta_file = path / "artifacts" / "meta.json"
    meta = json.loads(meta_file.read_text())
    for key in ("trusted_types", "estimator_trusted_types", "preprocessor_trusted_types"):
        meta[key] = ["fractions.Fraction"]
    meta_file.write_text(json.dumps(meta))
    # Plain load_model (no hash check): the loader's fixed list alone decides, and refuses it.
    with pytest.raises(Exception, match="fractions.Fraction"):
        mlflow.pyfunc.load_model(str(path))


def test_a_type_outside_the_allow_list_fails_the_save_and_the_model(tracker: Tracker):
    # A KD-tree KNN with the manhattan metric holds sklearn's ManhattanDistance64, which is not allow-listed.
    params = {"metric": "manhattan", "algorithm": "kd_tree"}
    pipeline, test = fitted("binary", "sklearn.neighbors.KNeighborsClassifier", params)
    run_id = new_run(tracker)
    with pytest.raises(UntrustedTypeError, match=r"ManhattanDistance64.*TRUSTED_TYPES in pyfunc_model\.py"):
        tracker.log_pyfunc_model(run_id, pipeline, test)
    experiment_id = tracker.client.get_run(run_id).info.experiment_id
    models = tracker.client.search_logged_models(experiment_ids=[experiment_id])
    assert [m.status for m in models] == [LoggedModelStatus.FAILED]


def test_audit_refuses_a_tampered_model_of_a_project_run(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    run_id = tracker.client.get_logged_model(model_id).source_run_id
    tracker.set_tags(run_id, {"model.uri": f"models:/{model_id}"})
    auditor = Auditor(tracker.client)
    model_finding = next(f for f in auditor.audit(run_id, {"final_model"}).findings if f.name == "model")
    assert model_finding.status == "present" and "unverified" not in model_finding.detail
    (stored_dir(tracker, model_id) / "pyfunc_model.py").write_text("raise SystemExit\n")
    model_finding = next(f for f in auditor.audit(run_id, {"final_model"}).findings if f.name == "model")
    assert model_finding.status == "malformed" and "pyfunc_model.py: recorded sha256" in model_finding.detail


def test_audit_loads_a_plain_script_model_and_says_it_is_unverified(tracker: Tracker, logged_rf):
    model_id, _, _ = logged_rf
    client = tracker.client
    run_id = client.get_logged_model(model_id).source_run_id
    client.delete_tag(run_id, "dagster.run_id")  # a run logged by a plain script
    client.delete_logged_model_tag(model_id, FILES_SHA256_TAG)  # which recorded no hashes
    client.set_tag(run_id, "model.uri", f"models:/{model_id}")
    model_finding = next(
        f for f in Auditor(client).audit(run_id, {"final_model"}).findings if f.name == "model"
    )
    assert model_finding.status == "present"
    assert model_finding.detail == f"models:/{model_id} (loaded unverified: no recorded file hashes)"
    shutil.rmtree(stored_dir(tracker, model_id) / "artifacts")
    model_finding = next(
        f for f in Auditor(client).audit(run_id, {"final_model"}).findings if f.name == "model"
    )
    assert model_finding.status == "malformed"
