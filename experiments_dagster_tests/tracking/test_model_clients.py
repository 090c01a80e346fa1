"""The logged model in MLflow's own clients, in a fresh process: ``pyfunc.load_model`` by alias and
by model id, 1-row frames with gaps, ints as floats, extra, reordered and left-out columns,
``predict_method``, ``mlflow.models.evaluate``; and the files those clients write into the stored
model do not make it unverifiable."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.types.schema import AnyType, DataType

from experiments_dagster.ml.metrics import predict, task_metrics
from experiments_dagster.tracking.model_gate import RefusedModel
from experiments_dagster.tracking.model_io import ModelVerificationError, file_digests, load_verified_model
from experiments_dagster.tracking.store import Tracker
from experiments_dagster_tests.tracking.test_model_io import fitted, frames, new_run, stored_dir

pytestmark = pytest.mark.slow  # a fresh interpreter imports MLflow and loads the model: ~15 s

# Run in a fresh interpreter: only MLflow's public API, nothing of this project imported.
CLIENT_SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    import mlflow, numpy as np, pandas as pd
    uri, name, model_id, csv_path, out = sys.argv[1:]
    mlflow.set_tracking_uri(uri)
    test = pd.read_csv(csv_path)
    answers = {}
    for label, model_uri in (("alias", f"models:/{name}@champion"), ("id", f"models:/{model_id}")):
        model = mlflow.pyfunc.load_model(model_uri)
        lines = open(csv_path).read().splitlines()
        # One request per row, each read from its own CSV line: a gap becomes float64 NaN.
        one_row = [
            np.asarray(model.predict(pd.read_csv(io.StringIO(lines[0] + "\\n" + line)))).tolist()[0]
            for line in lines[1:]
        ]
        batch = np.asarray(model.predict(test)).tolist()
        as_floats = np.asarray(model.predict(test.astype({"count": float}))).tolist()
        shuffled = test[list(reversed(test.columns))].assign(extra_column="ignored")
        reordered = np.asarray(model.predict(shuffled)).tolist()
        left_out = np.asarray(model.predict(test.drop(columns=["color", "x"]))).tolist()
        proba = model.predict(test, params={"predict_method": "predict_proba"})
        answers[label] = {
            "one_row": one_row, "batch": batch, "as_floats": as_floats, "reordered": reordered,
            "left_out": left_out, "proba": proba.to_numpy().tolist(), "proba_columns": list(proba.columns),
        }
    with mlflow.start_run():
        result = mlflow.models.evaluate(
            f"models:/{name}@champion", test.assign(label=pd.read_csv(csv_path + ".y")["label"]),
            targets="label", model_type="classifier",
            evaluator_config={"log_model_explainability": False, "pos_label": "yes"},
        )
    answers["evaluate"] = {k: float(v) for k, v in result.metrics.items()}
    json.dump(answers, open(out, "w"))
    """
)


def registered_champion(tracker: Tracker, model_id: str, name: str = "mixed_model") -> str:
    client = tracker.client
    client.create_registered_model(name)
    logged = client.get_logged_model(model_id)
    version = client.create_model_version(
        name,
        source=logged.artifact_location,
        run_id=logged.source_run_id,
        model_id=model_id,
        tags={"model.id": model_id},
    ).version
    client.set_registered_model_alias(name, "champion", version)
    return str(version)


def run_clients(tracker: Tracker, model_id: str, test: pd.DataFrame, y: pd.Series, tmp: Path) -> dict:
    csv = tmp / "test.csv"
    test.to_csv(csv, index=False)
    pd.DataFrame({"label": y}).to_csv(f"{csv}.y", index=False)
    out = tmp / "answers.json"
    argv = [
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        tracker.tracking_uri,
        "mixed_model",
        model_id,
        str(csv),
        str(out),
    ]
    done = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_mlflow_clients_in_a_fresh_process_give_the_pipelines_answers(tracker: Tracker, tmp_path: Path):
    pipeline, test = fitted("binary")
    X, _, _ = frames("binary")
    assert X["color"].isna().any() and X["x"].isna().any() and not X["city"].isna().any()
    # Gaps where training had them, in every row of one column at a time: 1-row frames get float64 NaN.
    test.loc[20:29, "color"] = np.nan
    test.loc[30:39, "x"] = np.nan
    y = pd.Series(pipeline.predict(test)).where(np.arange(len(test)) % 7 != 0, "no")  # labels, not all right
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, test, schema_frames=(X,))
    registered_champion(tracker, model_id)
    folder = stored_dir(tracker, model_id)
    before = file_digests(folder)

    answers = run_clients(tracker, model_id, test, y, tmp_path)

    expected = pipeline.predict(test).tolist()
    no_gaps = pipeline.predict(test.assign(color=np.nan, x=np.nan)).tolist()
    for label in ("alias", "id"):
        got = answers[label]
        assert got["one_row"] == expected, label
        assert got["batch"] == expected and got["as_floats"] == expected and got["reordered"] == expected
        assert got["left_out"] == no_gaps  # optional columns left out are missing values
        assert got["proba_columns"] == [str(c) for c in pipeline.classes_]
        np.testing.assert_array_equal(np.asarray(got["proba"]), pipeline.predict_proba(test))
    ours = task_metrics("binary", y.to_numpy(), predict(pipeline, test, "binary"), "yes")
    for name in ("roc_auc", "log_loss", "pr_auc", "accuracy"):
        their = answers["evaluate"][{"accuracy": "accuracy_score"}.get(name, name)]
        assert their == pytest.approx(ours[name], abs=1e-9, rel=0), name

    # Loading by alias wrote MLflow's registered_model_meta into the stored folder; nothing else.
    after = file_digests(folder)
    assert set(after) - set(before) == {"registered_model_meta"}
    assert {k: v for k, v in after.items() if k in before} == before
    load_verified_model(tracker.client, "models:/mixed_model@champion")  # still verifies
    (folder / "artifacts" / "registered_model_meta").write_text("model_name: x\n")  # not where MLflow writes
    with pytest.raises(ModelVerificationError, match=r"artifacts/registered_model_meta: .*file added"):
        load_verified_model(tracker.client, "models:/mixed_model@champion")


def test_the_signature_comes_from_the_training_frame(tracker: Tracker):
    pipeline, test = fitted("binary")
    X, _, _ = frames("binary")
    example = test.dropna()  # the example rows alone would make every column required
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, example, schema_frames=(X,))
    loaded = load_verified_model(tracker.client, f"models:/{model_id}")
    inputs = {spec.name: spec for spec in loaded.metadata.signature.inputs.inputs}
    assert [inputs[c].required for c in X.columns] == [not X[c].isna().any() for c in X.columns]
    assert inputs["x"].type == DataType.double and inputs["city"].type == DataType.string
    assert inputs["flag"].type == DataType.boolean
    # Ints (a float in a JSON body) and a string column with gaps are typed by the model itself.
    assert isinstance(inputs["count"].type, AnyType) and isinstance(inputs["color"].type, AnyType)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("weights", r"artifacts/estimator\.ubj: recorded sha256 [0-9a-f]{64}, found [0-9a-f]{64}"),
        ("code", r"pyfunc_model\.py: recorded sha256 [0-9a-f]{64}, found [0-9a-f]{64}"),
        ("code_path", r"code/helpers\.py: recorded sha256 none \(file added\)"),
        ("requirements", r"requirements\.txt: .*found none \(file missing\)"),
    ],
)
def test_what_a_loader_reads_is_still_refused_by_name(tracker: Tracker, change: str, named: str):
    pipeline, test = fitted("binary")
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, test)
    registered_champion(tracker, model_id)
    folder = stored_dir(tracker, model_id)
    mlflow_uri = "models:/mixed_model@champion"
    load_verified_model(tracker.client, mlflow_uri)
    if change == "weights":
        weights = folder / "artifacts" / "estimator.ubj"
        weights.write_bytes(weights.read_bytes().replace(b"base_score", b"base_scorf", 1))
    elif change == "code":
        (folder / "pyfunc_model.py").write_text("import os\n" + (folder / "pyfunc_model.py").read_text())
    elif change == "code_path":  # pyfunc.load_model puts a model's code/ folder on sys.path
        (folder / "code").mkdir()
        (folder / "code" / "helpers.py").write_text("raise SystemExit\n")
    else:
        (folder / "requirements.txt").unlink()
    with pytest.raises(ModelVerificationError, match=named):
        load_verified_model(tracker.client, mlflow_uri)


FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_models_logged_by_an_earlier_release_of_the_model_code_still_load(tracker: Tracker):
    """A model keeps the pyfunc_model.py it was logged with: the 2026-12-01 release still loads
    through the gate (promotion, drift, audit, serve), and any other code file does not."""
    from experiments_dagster.tracking.model_gate import (
        EARLIER_MODEL_CODE,
        MODEL_CODE_SHA256,
        known_model_code,
        load_gated_model,
    )
    from experiments_dagster.tracking.model_io import FILES_SHA256_TAG, MODEL_CODE

    old = (FIXTURES / "pyfunc_model_2026_12_01.py.txt").read_bytes()
    assert hashlib.sha256(old).hexdigest() in EARLIER_MODEL_CODE
    assert hashlib.sha256(MODEL_CODE.read_bytes()).hexdigest() == MODEL_CODE_SHA256, (
        "pyfunc_model.py changed: move the old MODEL_CODE_SHA256 into EARLIER_MODEL_CODE (models logged "
        "with it must still load) and set MODEL_CODE_SHA256 to the new file's sha256"
    )
    assert MODEL_CODE_SHA256 in known_model_code()
    pipeline, test = fitted("binary")
    model_id = tracker.log_pyfunc_model(new_run(tracker), pipeline, test.dropna())
    folder = stored_dir(tracker, model_id)

    def replace_code(code: bytes) -> None:  # as if logged with that code: its hashes recorded too
        (folder / "pyfunc_model.py").write_bytes(code)
        tags = {FILES_SHA256_TAG: json.dumps(file_digests(folder), sort_keys=True, separators=(",", ":"))}
        tracker.client.set_logged_model_tags(model_id, tags)

    replace_code(old)
    model, _ = load_gated_model(tracker.client, f"models:/{model_id}", folder.parent / "dl", ours=True)
    clean = test.dropna()
    np.testing.assert_array_equal(np.asarray(model.predict(clean)), pipeline.predict(clean))
    replace_code(old + b"\n# one more line\n")
    with pytest.raises(RefusedModel, match="is not a release of this project's pyfunc_model.py"):
        load_gated_model(tracker.client, f"models:/{model_id}", folder.parent / "dl2", ours=True)
