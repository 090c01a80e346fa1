"""The sha256 of every file of a logged model: recorded when it is logged, checked before it loads.

``digests_tag`` is the LoggedModel tag written at log time (in the tracking store, not the
artifact store); ``load_verified_model`` and ``download_verified_model`` download a model (by
model id, registered version or alias), refuse it unless every file matches that tag, and only
then load or hand over the checked copy. Writing the model itself: ``model_io.py``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModel
from mlflow.entities.model_registry import ModelVersion

from experiments_dagster.tracking import tags

# Tag on the LoggedModel (so in the tracking store, not the artifact store): JSON object mapping
# each file of the model directory (POSIX path relative to it) to its sha256.
FILES_SHA256_TAG = "model.files_sha256"
MAX_TAG_VALUE_CHARS = 8000  # MLflow's limit on a tag value


class ModelVerificationError(Exception):
    """A model's files do not match what was recorded when it was logged, or nothing was recorded."""


class UnverifiableModelError(ModelVerificationError):
    """The model has no recorded file hashes: logged before they were recorded, or not by us."""


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
