"""Writing the fitted pipeline as an MLflow pyfunc model and as a joblib pickle."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import Model, infer_signature
from mlflow.utils import environment as mlflow_environment
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier
from experiments_dagster.tracking import preprocessor_state
from experiments_dagster.tracking.environment import model_requirements
from experiments_dagster.tracking.preprocessor_state import StatePreprocessor, export_state

logger = logging.getLogger(__name__)

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
STATE_CODE = Path(preprocessor_state.__file__)  # shipped with the model, which runs it at load
INPUT_EXAMPLE_ROWS = 5
VERIFY_ROWS = 2000  # rows of each sample frame the JSON state must reproduce exactly
UNSEEN = "\x00unseen category\x00"  # a probe value no real category equals
_MISMATCH_CHECK = "warn_dependency_requirement_mismatches"
_mismatch_check_lock = threading.Lock()


def _skops_dump(obj: Any, path: Path) -> list[str]:
    """Dump with skops; return the types the file needs trusted (we wrote it ourselves)."""
    import skops.io as sio  # its import enumerates every scikit-learn estimator: seconds, so lazily

    sio.dump(obj, path)
    return sorted(sio.get_untrusted_types(file=path))


def _jsonable(values: np.ndarray) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def probe_frame(state: dict[str, Any], like: pd.DataFrame) -> pd.DataFrame:
    """Rows built on ``like``'s first row that hit every known category, an unseen one, NaN and
    None in each categorical column, both values of each boolean, and NaN in each numeric one."""
    cat = state["categorical"]
    probes = {
        col: [*f["categories"], UNSEEN, np.nan, None]
        for col, f in zip(cat["columns"], cat["features"], strict=True)
    }
    n = max([2, *(len(v) for v in probes.values())])
    frame = like.iloc[[0] * n].reset_index(drop=True)
    for col, values in probes.items():
        frame[col] = pd.Series(np.resize(np.array(values, dtype=object), n), dtype=object)
    odd = np.arange(n) % 2 == 1
    for col in state["boolean"]["columns"]:
        frame[col] = odd  # stays a bool column, as at fit
    for col in state["numeric"]["columns"]:
        frame[col] = np.where(odd, np.nan, frame[col].to_numpy(dtype=np.float64, na_value=np.nan))
    return frame


def verified_state(preprocessor: Any, samples: Sequence[pd.DataFrame]) -> str | None:
    """The preprocessor's state as JSON text if, read back, it reproduces ``transform`` exactly
    (NaN positions included) on the samples and on a probe of every category; else None."""
    state = export_state(preprocessor)
    frames = [s for s in samples if len(s)]
    if state is None or not frames:
        logger.info("Preprocessor structure is not covered by the JSON state; saving it with skops.")
        return None
    try:
        text = json.dumps(state, allow_nan=False)
        applier = StatePreprocessor(json.loads(text))
        for frame in [*frames, probe_frame(state, frames[0])]:
            with warnings.catch_warnings():  # the probe's unseen values are expected here
                warnings.simplefilter("ignore", UserWarning)
                expected = preprocessor.transform(frame)
            if not (
                isinstance(expected, np.ndarray)
                and expected.dtype == np.float64
                and np.array_equal(applier.transform(frame), expected, equal_nan=True)
            ):
                logger.warning("Preprocessor JSON state differs from scikit-learn; saving it with skops.")
                return None
    except Exception as exc:  # anything unexpected means "not proven exact": the safe format then
        logger.warning("Preprocessor JSON state could not be verified (%r); saving it with skops.", exc)
        return None
    return text


def _write_preprocessor(
    preprocessor: Any, samples: Sequence[pd.DataFrame], workdir: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """(meta entries, artifacts): the verified JSON state plus the code applying it, else skops."""
    text = verified_state(preprocessor, samples)
    if text is not None:
        path = workdir / "preprocessor.json"
        path.write_text(text)
        artifacts = {"preprocessor": str(path), "preprocessor_code": str(STATE_CODE)}
        return {"preprocessor_format": "state-json"}, artifacts
    path = workdir / "preprocessor.skops"
    meta = {"preprocessor_format": "skops", "preprocessor_trusted_types": _skops_dump(preprocessor, path)}
    return meta, {"preprocessor": str(path)}


def write_model_artifacts(
    pipeline: Pipeline, workdir: Path, samples: Sequence[pd.DataFrame] = ()
) -> dict[str, str]:
    """The preprocessor (JSON state if exact on ``samples``, else skops), the estimator (.ubj for
    XGBoost, else .skops) and meta.json; returns MLflow's artifacts mapping."""
    workdir.mkdir(parents=True, exist_ok=True)
    step = pipeline.named_steps["model"]
    estimator = step.estimator_ if isinstance(step, EncodedTargetClassifier) else step
    classes = _jsonable(step.classes_) if isinstance(step, EncodedTargetClassifier) else None
    meta, artifacts = _write_preprocessor(pipeline.named_steps["preprocess"], samples, workdir)
    meta |= {"classes": classes, "estimator_class": type(estimator).__name__}
    if type(estimator).__module__.startswith("xgboost"):
        est_path = workdir / "estimator.ubj"
        estimator.save_model(est_path)
        meta |= {"estimator_format": "xgboost-ubj", "estimator_trusted_types": []}
    else:
        est_path = workdir / "estimator.skops"
        meta |= {"estimator_format": "skops", "estimator_trusted_types": _skops_dump(estimator, est_path)}
    (workdir / "meta.json").write_text(json.dumps(meta, indent=2))
    return artifacts | {"estimator": str(est_path), "meta": str(workdir / "meta.json")}


def _no_mismatch_check(requirements: list[str]) -> None:
    return None


@contextmanager
def _requirement_mismatch_check_skipped() -> Iterator[None]:
    """Within the block, MLflow's save-time check of requirements against installed packages is a
    no-op; the original is restored after. An MLflow without that hook is left alone."""
    # The lock makes "read the original, patch, restore" atomic: two threads saving at once can
    # never restore each other's no-op as "the original". Saves are rare, so serializing is free.
    with _mismatch_check_lock:
        original = getattr(mlflow_environment, _MISMATCH_CHECK, None)
        if original is None:
            yield
            return
        setattr(mlflow_environment, _MISMATCH_CHECK, _no_mismatch_check)
        try:
            yield
        finally:
            setattr(mlflow_environment, _MISMATCH_CHECK, original)


def save_pyfunc_model(
    pipeline: Pipeline,
    X_example: pd.DataFrame,
    path: Path,
    mlflow_model: Model | None = None,
    X_train: pd.DataFrame | None = None,
) -> None:
    """Save a loadable pyfunc model (signature, input example, pinned requirements) at ``path``.

    ``X_example`` (its head is the input example) and a sample of ``X_train`` are the rows the
    JSON preprocessor state must reproduce exactly to be used instead of skops.
    """
    samples = [X_example.head(VERIFY_ROWS)]
    if X_train is not None and len(X_train):
        samples.append(X_train.sample(n=min(VERIFY_ROWS, len(X_train)), random_state=0))
    artifacts = write_model_artifacts(pipeline, path.parent / f"{path.name}_artifacts", samples)
    example = X_example.head(INPUT_EXAMPLE_ROWS)
    signature = infer_signature(example, pipeline.predict(example), params={"predict_method": "predict"})
    uses_skops = any(Path(p).suffix == ".skops" for p in artifacts.values())
    # MLflow compares the requirements against the installed packages (0.5-0.8 s here: it maps
    # every installed file to its distribution) only to log a warning. Ours are `name==version`
    # read from these very installed distributions (environment.model_requirements), so the
    # check cannot disagree. Only this save skips it: mlflow.pyfunc.load_model still checks, in
    # the environment where the model is loaded, which is where a mismatch can exist.
    with _requirement_mismatch_check_skipped():
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(MODEL_CODE),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=list(model_requirements(with_skops=uses_skops)),
            mlflow_model=mlflow_model,
        )


def dump_pickle(pipeline: Pipeline, path: Path) -> str:
    """joblib-dump the whole fitted pipeline; return the file's sha256."""
    joblib.dump(pipeline, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
