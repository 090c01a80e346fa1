"""Which logged models the audit lets MLflow load: a fixed table of loaders, checked on the files.

``mlflow.pyfunc.load_model`` imports the module a model's ``MLmodel`` file names
(``loader_module``), puts the model's code paths on ``sys.path``, executes a models-from-code file
and, for pickled flavors, unpickles; the sklearn flavor's skops allow-list is read from the
``MLmodel`` file too. All of that is chosen by whoever logged the model. So the audit first
downloads the files and reads ``MLmodel`` itself (bounded, no YAML aliases), and loads only:

- this project's models: loader ``mlflow.pyfunc.loaders.code_model`` whose code file is
  byte-for-byte this installation's ``pyfunc_model.py`` or an earlier release of it listed in
  ``EARLIER_MODEL_CODE`` (its own skops allow-list and XGBoost class table then decide what the
  artifacts may hold);
- scikit-learn models saved by ``mlflow.sklearn`` in the skops format, trusting no type beyond
  the ones this project's model loader trusts.

Anything else is reported, not loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow import MlflowClient

from experiments_dagster.core.bounded_yaml import load_bounded
from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.tracking.store import download_model

MAX_MLMODEL_BYTES = 1024 * 1024
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"
SKLEARN_LOADER = "mlflow.sklearn"


class RefusedModel(Exception):
    """A model the audit does not load: what loading it would do is chosen by its files."""


# sha256 of earlier releases of pyfunc_model.py whose models are still loaded: a model keeps the
# code it was logged with, so a change to the file must not make every champion unloadable.
# Only releases whose loader trusts a fixed skops list and unpickles nothing are listed; add the
# outgoing version's hash here whenever pyfunc_model.py changes.
# The sha256 of the pyfunc_model.py this release ships. A test fails when the file changes without
# this being updated, so that the outgoing hash is moved into EARLIER_MODEL_CODE first.
MODEL_CODE_SHA256 = "d5a894c25e2e7e7d1b559eeea66a745766c6f120076c0a14037d4346a0012607"
EARLIER_MODEL_CODE: dict[str, str] = {
    "469498051f525c3ea37a29f6a4e2fb5b5db3e968c7a8bb1af64e7d8092f530b9": "2026-12-01 (3a4b2c7): skops "
    "preprocessor, TRUSTED_TYPES fixed in code",
}


def known_model_code() -> frozenset[str]:
    """sha256 of every models-from-code file this installation loads: its own and earlier ones."""
    from experiments_dagster.tracking.model_io import MODEL_CODE

    return frozenset({hashlib.sha256(MODEL_CODE.read_bytes()).hexdigest(), *EARLIER_MODEL_CODE})


def _code_model(local: Path, flavors: dict[str, Any], pyfunc: dict[str, Any]) -> str | None:
    code = pyfunc.get("model_code_path")
    if not isinstance(code, str):
        return "its MLmodel names no model_code_path"
    file = local / Path(code).name  # what MLflow executes: the file of that name in the model folder
    if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() not in known_model_code():
        return (
            f"its code file {Path(code).name!r} is not a release of this project's pyfunc_model.py "
            "(logged by other code; re-materialize final_model to log it with this version)"
        )
    return None


def _sklearn(local: Path, flavors: dict[str, Any], pyfunc: dict[str, Any]) -> str | None:
    from experiments_dagster.tracking.model_io import trusted_types

    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, dict):
        return "its MLmodel has no sklearn flavor"
    form = sklearn.get("serialization_format")
    if form != "skops":
        return f"it is serialized as {str(form)[:40]!r}: unpickling runs code, only skops files are loaded"
    trusted = sklearn.get("skops_trusted_types") or []
    if not isinstance(trusted, list):
        return "its skops_trusted_types is not a list"
    extra = sorted({str(t) for t in trusted} - trusted_types())
    if extra:
        return f"its MLmodel trusts types {extra[:5]} that this project's model loader does not"
    return None


# loader_module -> the check of the files that lets it be loaded (None: allowed).
LOADERS: dict[str, Callable[[Path, dict[str, Any], dict[str, Any]], str | None]] = {
    CODE_MODEL_LOADER: _code_model,
    SKLEARN_LOADER: _sklearn,
}


def load_refusal(local: Path) -> str | None:
    """Why the downloaded model folder ``local`` must not be loaded here (None: it may be)."""
    try:
        meta = load_bounded(local / "MLmodel", MAX_MLMODEL_BYTES)
    except ExperimentInputError as exc:
        return str(exc)
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(flavors, dict) or not isinstance(pyfunc, dict):
        return "its MLmodel has no python_function flavor"
    if pyfunc.get("code"):
        return "it carries code paths, which loading would put on sys.path"
    loader = pyfunc.get("loader_module")
    check = LOADERS.get(loader) if isinstance(loader, str) else None
    if check is None:
        return f"its loader_module {str(loader)[:100]!r} is not one the audit loads ({', '.join(LOADERS)})"
    return check(local, flavors, pyfunc)


def model_uri_of(run: Any, artifacts: dict[str, int]) -> str | None:
    """The run's own model: the last LoggedModel MLflow linked to it, else its ``model/`` folder.

    The ``model.uri`` tag is only text: it is used when it names one of those (it may point
    anywhere: another run's model, a file path, a URL)."""
    outputs = run.outputs.model_outputs if run.outputs else []
    models = [f"models:/{o.model_id}" for o in outputs]
    folder = [f"runs:/{run.info.run_id}/model"] if "model/MLmodel" in artifacts else []
    tagged = run.data.tags.get("model.uri")
    if tagged in models + folder:
        return tagged
    if models:
        return models[-1]
    return folder[0] if folder else None


def load_gated_model(
    client: MlflowClient, uri: str, dst: Path, *, ours: bool
) -> tuple[mlflow.pyfunc.PyFuncModel, str]:
    """The model at ``uri``, downloaded to ``dst`` and loaded only if its files match the hashes
    recorded when it was logged (required for a model of ours) and ``load_refusal`` allows them;
    with a note on how it was loaded. RefusedModel if the gate refuses it."""
    from experiments_dagster.tracking.model_digests import (
        UnverifiableModelError,
        recorded_digests,
        verify_model_files,
    )

    local = download_model(client, uri, dst)
    note = ""
    try:  # hashing reads the files and runs nothing: a tampered file is named first
        verify_model_files(local, recorded_digests(client, uri)[1])
    except UnverifiableModelError:
        if ours:
            raise  # ours: recorded hashes are required (see model_digests.load_verified_model)
        # A plain script's model never had its file hashes recorded: say so in the finding.
        note = " (loaded unverified: no recorded file hashes)"
    refusal = load_refusal(local)
    if refusal is not None:
        raise RefusedModel(refusal)
    # The check is that it loads and predicts here; MLflow's environment warning is noise.
    return mlflow.pyfunc.load_model(str(local), suppress_warnings=True), note
