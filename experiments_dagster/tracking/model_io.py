"""Writing the fitted pipeline as an MLflow pyfunc model and as a joblib pickle.

Loading it back only after every file of the model matches the sha256 recorded in the tracking
store is in ``model_digests.py``; its API is also importable from here, where the documentation
and the CLI name it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier
from experiments_dagster.tracking.environment import model_requirements
from experiments_dagster.tracking.model_digests import (
    FILES_SHA256_TAG,
    ModelVerificationError,
    UnverifiableModelError,
    digests_tag,
    download_verified_model,
    file_digests,
    load_verified_model,
    logged_model_for_uri,
    recorded_digests,
    verify_model_files,
)

# Part of this module's API: the model's writing, and its verified loading (model_digests.py),
# which docs/reference/mlflow-names.md, the CLI's serve and the tests import from here.
__all__ = [
    "FILES_SHA256_TAG",
    "INPUT_EXAMPLE_ROWS",
    "MODEL_CODE",
    "ModelVerificationError",
    "UntrustedTypeError",
    "UnverifiableModelError",
    "digests_tag",
    "download_verified_model",
    "dump_pickle",
    "file_digests",
    "load_verified_model",
    "logged_model_for_uri",
    "recorded_digests",
    "save_pyfunc_model",
    "training_signature",
    "trusted_types",
    "verify_model_files",
    "write_model_artifacts",
]

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
INPUT_EXAMPLE_ROWS = 5


class UntrustedTypeError(ValueError):
    """A skops file of the model would need a type that the model's loader does not trust."""


@lru_cache(maxsize=1)
def trusted_types() -> frozenset[str]:
    """``TRUSTED_TYPES`` as written in pyfunc_model.py: the list the model's loader passes to skops.

    The literal is read from the file, not imported, because importing the module runs its
    ``mlflow.models.set_model`` and that sets MLflow's process-wide "model from code" slot.
    """
    tree = ast.parse(MODEL_CODE.read_text(), filename=str(MODEL_CODE))
    for node in tree.body:
        names = [getattr(t, "id", None) for t in node.targets] if isinstance(node, ast.Assign) else []
        if names == ["TRUSTED_TYPES"]:
            return frozenset(ast.literal_eval(node.value))
    raise RuntimeError(f"{MODEL_CODE} defines no TRUSTED_TYPES")


def _skops_dump(obj: Any, path: Path, part: str) -> None:
    """Dump with skops; refuse an object holding a type that the loader would not trust."""
    import skops.io as sio  # seconds to import, so lazily (a full `run` imports it first: cli.py)

    sio.dump(obj, path)
    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - trusted_types())
    if untrusted:
        raise UntrustedTypeError(
            f"The fitted {part} ({type(obj).__name__}) holds type(s) {', '.join(untrusted)}, which the "
            f"model's loader does not trust. Its allow-list is TRUSTED_TYPES in {MODEL_CODE.name}: extend "
            "it only after checking that loading the type cannot run code, or use another estimator."
        )


def _jsonable(values: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def write_model_artifacts(pipeline: Pipeline, workdir: Path) -> dict[str, str]:
    """The preprocessor (skops), the estimator (.ubj for XGBoost, else .skops) and meta.json;
    returns MLflow's artifacts mapping. Raises UntrustedTypeError before writing meta.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    step = pipeline.named_steps["model"]
    estimator = step.estimator_ if isinstance(step, EncodedTargetClassifier) else step
    classes = _jsonable(step.classes_) if isinstance(step, EncodedTargetClassifier) else None
    pre_path = workdir / "preprocessor.skops"
    _skops_dump(pipeline.named_steps["preprocess"], pre_path, "preprocessor")
    meta: dict[str, Any] = {"classes": classes, "estimator_class": type(estimator).__name__}
    if type(estimator).__module__.startswith("xgboost"):
        est_path = workdir / "estimator.ubj"
        estimator.save_model(est_path)
        meta["estimator_format"] = "xgboost-ubj"
    else:
        est_path = workdir / "estimator.skops"
        _skops_dump(estimator, est_path, "estimator")
        meta["estimator_format"] = "skops"
    (workdir / "meta.json").write_text(json.dumps(meta, indent=2))
    return {"preprocessor": str(pre_path), "estimator": str(est_path), "meta": str(workdir / "meta.json")}


def _column_spec(name: str, column: pd.Series, missing: bool) -> ColSpec:
    """One input column of the signature, from the whole training column (not a few rows).

    MLflow's schema enforcement refuses float64 for ``long`` and int64 for ``double``, and a
    1-row frame with a gap makes any column float64 NaN. So integer columns, and string or
    boolean columns that had missing values in training, are ``Any``: the model itself makes
    them numbers or categories again (pyfunc_model.py ``_aligned``). Floats are ``double``.
    Columns that had missing values are optional: left out, they are missing values."""
    if pd.api.types.is_bool_dtype(column):
        kind: Any = DataType.boolean
    elif pd.api.types.is_integer_dtype(column):
        kind = AnyType()
    elif pd.api.types.is_numeric_dtype(column):
        kind = DataType.double
    elif pd.api.types.is_datetime64_any_dtype(column):
        kind = DataType.datetime
    else:
        kind = DataType.string
    if missing and kind in (DataType.string, DataType.boolean):
        kind = AnyType()
    return ColSpec(kind, name, required=not missing)


def training_signature(
    frames: tuple[pd.DataFrame, ...], pipeline: Pipeline, example: pd.DataFrame
) -> ModelSignature:
    """The model's signature: inputs from the training frames' dtypes and missing values, outputs
    from the example's predictions, and the ``predict_method`` parameter."""
    first = frames[0]
    missing = first.isna().any()
    for frame in frames[1:]:
        missing = missing | frame.isna().any().reindex(missing.index, fill_value=False)
    inputs = Schema([_column_spec(str(c), first[c], bool(missing[c])) for c in first.columns])
    with warnings.catch_warnings():
        # Only the outputs and params are taken from this inference; its hint about integer
        # inputs concerns the inputs, which come from the training frames above.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        inferred = infer_signature(example, pipeline.predict(example), params={"predict_method": "predict"})
    return ModelSignature(inputs=inputs, outputs=inferred.outputs, params=inferred.params)


def save_pyfunc_model(
    pipeline: Pipeline,
    X_example: pd.DataFrame,
    path: Path,
    mlflow_model: Model | None = None,
    schema_frames: tuple[pd.DataFrame, ...] = (),
) -> None:
    """Save a loadable pyfunc model (signature, input example, pinned requirements) at ``path``.

    ``X_example``'s head is the input example. The signature's inputs come from
    ``schema_frames`` (the training frames; ``X_example`` when none are given)."""
    artifacts = write_model_artifacts(pipeline, path.parent / f"{path.name}_artifacts")
    example = X_example.head(INPUT_EXAMPLE_ROWS)
    signature = training_signature(schema_frames or (X_example,), pipeline, example)
    # MLflow compares the requirements against the installed packages here, only to log a
    # warning. No save_model argument or MLflow environment variable turns that off
    # (MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK skips a different check, pip's dry-run resolve), so we
    # pay for it. It costs 0.4-0.6 s on the first save in a process, where it maps every
    # installed file to its distribution, and ~0.02 s after that (MLflow caches the map).
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
