"""Writing the fitted pipeline as an MLflow pyfunc model and as a joblib pickle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model, infer_signature
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier
from experiments_dagster.tracking.environment import model_requirements

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
INPUT_EXAMPLE_ROWS = 5


def _skops_dump(obj: Any, path: Path) -> list[str]:
    """Dump with skops; return the types the file needs trusted (we wrote it ourselves)."""
    import skops.io as sio  # its import enumerates every scikit-learn estimator: seconds, so lazily

    sio.dump(obj, path)
    return sorted(sio.get_untrusted_types(file=path))


def _jsonable(values: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def write_model_artifacts(pipeline: Pipeline, workdir: Path) -> dict[str, str]:
    """preprocessor.skops, estimator (.ubj for XGBoost, else .skops) and meta.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    step = pipeline.named_steps["model"]
    estimator = step.estimator_ if isinstance(step, EncodedTargetClassifier) else step
    classes = _jsonable(step.classes_) if isinstance(step, EncodedTargetClassifier) else None
    meta: dict[str, Any] = {
        "preprocessor_trusted_types": _skops_dump(
            pipeline.named_steps["preprocess"], workdir / "preprocessor.skops"
        ),
        "classes": classes,
        "estimator_class": type(estimator).__name__,
    }
    if type(estimator).__module__.startswith("xgboost"):
        est_path = workdir / "estimator.ubj"
        estimator.save_model(est_path)
        meta |= {"estimator_format": "xgboost-ubj", "estimator_trusted_types": []}
    else:
        est_path = workdir / "estimator.skops"
        meta |= {"estimator_format": "skops", "estimator_trusted_types": _skops_dump(estimator, est_path)}
    (workdir / "meta.json").write_text(json.dumps(meta, indent=2))
    return {
        "preprocessor": str(workdir / "preprocessor.skops"),
        "estimator": str(est_path),
        "meta": str(workdir / "meta.json"),
    }


def save_pyfunc_model(
    pipeline: Pipeline,
    X_example: pd.DataFrame,
    path: Path,
    mlflow_model: Model | None = None,
) -> None:
    """Save a loadable pyfunc model (signature, input example, pinned requirements) at ``path``."""
    artifacts = write_model_artifacts(pipeline, path.parent / f"{path.name}_artifacts")
    example = X_example.head(INPUT_EXAMPLE_ROWS)
    signature = infer_signature(
        example, pipeline.predict(example), params={"predict_method": "predict"}
    )
    mlflow.pyfunc.save_model(
        path=str(path),
        python_model=str(MODEL_CODE),
        artifacts=artifacts,
        signature=signature,
        input_example=example,
        pip_requirements=list(model_requirements()),
        mlflow_model=mlflow_model,
    )

def dump_pickle(pipeline: Pipeline, path: Path) -> str:
    """joblib-dump the whole fitted pipeline; return the file's sha256."""
    joblib.dump(pipeline, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
