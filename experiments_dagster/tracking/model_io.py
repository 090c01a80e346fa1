"""Writing the fitted pipeline as an MLflow pyfunc model and as a joblib pickle; loading it back
only after every file of the model matches the sha256 recorded in the tracking store."""

from __future__ import annotations

import ast
import hashlib
import json
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import joblib
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema
from sklearn.pipeline import Pipeline

from experiments_dagster.ml.estimators import EncodedTargetClassifier
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.environment import model_requirements

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
INPUT_EXAMPLE_ROWS = 5
# Tag on the LoggedModel (so in the tracking store, not the artifact store): JSON object mapping
# each file of the model directory (POSIX path relative to it) to its sha256.
FILES_SHA256_TAG = "model.files_sha256"
MAX_TAG_VALUE_CHARS = 8000  # MLflow's limit on a tag value


class UntrustedTypeError(ValueError):
    """A skops file of the model would need a type that the model's loader does not trust."""


class ModelVerificationError(Exception):
    """A model's files do not match what was recorded when it was logged, or nothing was recorded."""


class UnverifiableModelError(ModelVerificationError):
    """The model has no recorded file hashes: logged before they were recorded, or not by us."""


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


# --- file hashes -----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by POSIX path relative to it."""
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def digests_tag(root: Path) -> dict[str, str]:
    """The LoggedModel tag recording ``file_digests(root)``."""
    value = json.dumps(file_digests(root), sort_keys=True, separators=(",", ":"))
    if len(value) > MAX_TAG_VALUE_CHARS:
        raise ValueError(f"{root} has too many files to record their sha256 in one tag ({len(value)} chars)")
    return {FILES_SHA256_TAG: value}


# Files that MLflow's own clients write into a model folder and that no MLflow loader reads. An
# added file is tolerated only if it is named here (at the model's root); every other added file
# is refused, because a loader may read it (``pyfunc.load_model`` reads MLmodel, requirements.txt,
# the python_model code file, every path under ``artifacts``, the input example, and puts a
# ``code/`` folder on sys.path). Taken from MLflow 3.17's source:
# - ``registered_model_meta``: ``ModelsArtifactRepository.download_artifacts``
#   (mlflow/store/artifact/models_artifact_repo.py) writes the registered name and version into
#   the downloaded folder whenever a ``models:/<name>/<version>`` or ``models:/<name>@<alias>``
#   URI is loaded, which on a local artifact store is the stored folder itself. Nothing in MLflow
#   reads it back (only that module names the file).
MLFLOW_WRITTEN_FILES = frozenset({"registered_model_meta"})


def verify_model_files(root: Path, expected: dict[str, str]) -> None:
    """Raise ModelVerificationError naming every changed, added or missing file.

    Files in ``MLFLOW_WRITTEN_FILES`` that were not recorded are ignored: MLflow's clients add
    them and its loaders never read them."""
    actual = {
        name: digest
        for name, digest in file_digests(root).items()
        if name in expected or name not in MLFLOW_WRITTEN_FILES
    }
    problems = [
        f"{name}: recorded sha256 {expected.get(name, 'none (file added)')}, "
        f"found {actual.get(name, 'none (file missing)')}"
        for name in sorted(expected.keys() | actual.keys())
        if expected.get(name) != actual.get(name)
    ]
    if problems:
        raise ModelVerificationError(
            "Refusing to load the model: its files differ from those recorded when it was logged: "
            + "; ".join(problems)
        )


def _model_id_of_version(version: ModelVersion) -> str | None:
    # The SQL registry store does not keep ModelVersion.model_id (it reads back None): our
    # versions carry it as the ``model.id`` tag (their source is the model's artifact location);
    # a version registered by others from a LoggedModel has ``source`` ``models:/<model id>``.
    if version.model_id:
        return version.model_id
    if version.tags.get(tags.MODEL_ID):
        return version.tags[tags.MODEL_ID]
    ref = (version.source or "").removeprefix("models:/")
    is_model_id = version.source.startswith("models:/") and ref and not set("/@") & set(ref)
    return ref if is_model_id else None


def logged_model_for_uri(client: MlflowClient, model_uri: str) -> LoggedModel | None:
    """The LoggedModel behind ``models:/<model id>``, ``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``; None for other URIs and versions not made from a LoggedModel."""
    if not model_uri.startswith("models:/"):
        return None
    ref = model_uri.removeprefix("models:/").strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        model_id = _model_id_of_version(client.get_model_version_by_alias(name, alias))
    elif "/" in ref:
        name, version = ref.split("/", 1)
        model_id = _model_id_of_version(client.get_model_version(name, version))
    else:
        model_id = ref
    return client.get_logged_model(model_id) if model_id else None


def recorded_digests(client: MlflowClient, model_uri: str) -> tuple[LoggedModel, dict[str, str]]:
    """The LoggedModel and the file hashes recorded for it; UnverifiableModelError if none are."""
    logged = logged_model_for_uri(client, model_uri)
    recorded = logged.tags.get(FILES_SHA256_TAG) if logged is not None else None
    if logged is None or not recorded:
        raise UnverifiableModelError(
            f"{model_uri} has no recorded file hashes (LoggedModel tag {FILES_SHA256_TAG}): it was logged "
            "before experiments_dagster recorded them, or not by experiments_dagster, so its files (the "
            "code it runs at load included) cannot be checked. Log it again (re-materialize final_model)."
        )
    return logged, json.loads(recorded)


def load_verified_model(
    client: MlflowClient, model_uri: str, *, suppress_warnings: bool = False
) -> mlflow.pyfunc.PyFuncModel:
    """Download the model, check every file's sha256 against the tag recorded at log time, then
    load the checked local copy with ``mlflow.pyfunc.load_model``.

    A changed, added or missing file raises ModelVerificationError naming it with both hashes;
    a model without recorded hashes raises UnverifiableModelError. ``suppress_warnings`` is
    passed to ``load_model``: True skips MLflow's requirement-mismatch warning.
    """
    with tempfile.TemporaryDirectory() as tmp:
        local = download_verified_model(client, model_uri, Path(tmp))
        # The loaded model holds everything in memory (load_context reads every artifact; MLflow
        # reads the input example eagerly), so the verified copy can go afterwards.
        return mlflow.pyfunc.load_model(str(local), suppress_warnings=suppress_warnings)


def download_verified_model(client: MlflowClient, model_uri: str, dst: Path) -> Path:
    """Download the model's folder into ``dst`` and check every file's sha256 against the tag
    recorded at log time; return the checked local folder (what ``load_verified_model`` loads
    and ``experiments-dagster serve`` serves)."""
    logged, expected = recorded_digests(client, model_uri)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=logged.artifact_location, dst_path=str(dst), tracking_uri=client.tracking_uri
    )
    verify_model_files(Path(local), expected)
    return Path(local)


def dump_pickle(pipeline: Pipeline, path: Path) -> str:
    """joblib-dump the whole fitted pipeline; return the file's sha256."""
    joblib.dump(pipeline, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
