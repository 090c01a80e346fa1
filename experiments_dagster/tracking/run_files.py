"""Files of a run: artifacts, figures, JSON, the dataset input and the logged model."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

# Column types come from a sample; whether a column may be missing comes from the whole frame
# (MLflow's own check walks every sampled value in Python: 0.4 s for 10,000 x 30).
DATASET_SCHEMA_SAMPLE_ROWS = 1_000


class RunFiles:
    """Uploads through ``self.client`` (part of ``Tracker``)."""

    client: MlflowClient

    def log_file(self, run_id: str, path: Path, artifact_dir: str | None = None) -> str:
        """Upload one file; return its artifact path."""
        self.client.log_artifact(run_id, str(path), artifact_dir)
        return f"{artifact_dir}/{path.name}" if artifact_dir else path.name

    def log_bytes(self, run_id: str, name: str, data: bytes) -> str:
        """Upload bytes as an artifact called ``name``."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            return self.log_file(run_id, path)

    def log_figure(self, run_id: str, fig: Figure, name: str) -> bytes:
        """Save a figure as PNG, upload it, and return the PNG bytes (for Dagster metadata)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            fig.savefig(path, format="png", dpi=100)
            self.log_file(run_id, path)
            return path.read_bytes()

    def log_json(self, run_id: str, name: str, payload: Any) -> str:
        """Upload a JSON document."""
        return self.log_bytes(run_id, name, json.dumps(payload, indent=2, default=str).encode())

    def log_dataset(
        self,
        run_id: str,
        frame: pd.DataFrame,
        *,
        name: str,
        digest: str,
        source: str,
        target: str,
        context: str = "training",
    ) -> None:
        """``log_input`` with our sha256 as digest, schema from a sample and the true row count."""
        from mlflow.models import infer_signature
        from mlflow.types.schema import ColSpec, Schema

        sampled = infer_signature(frame.head(DATASET_SCHEMA_SAMPLE_ROWS).drop(columns=[target])).inputs
        missing = {str(c): bool(v) for c, v in frame.isna().any().items()}  # no copy of the frame itself
        schema = Schema(
            [
                ColSpec(spec.type, spec.name, required=not missing.get(str(spec.name), False))
                if isinstance(spec, ColSpec)
                else spec
                for spec in sampled.inputs
            ]
        )
        dataset = Dataset(
            name=name,
            digest=digest[:36],
            source_type="local",
            source=json.dumps({"uri": Path(source).resolve().as_uri()}),
            schema=json.dumps({"mlflow_colspec": schema.to_dict()}),
            profile=json.dumps(
                {
                    "num_rows": int(len(frame)),
                    "num_elements": int(frame.size),
                    "sha256": digest,
                    "targets": target,
                }
            ),
        )
        self.client.log_inputs(
            run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        )

    def log_pyfunc_model(
        self,
        run_id: str,
        pipeline: Any,
        X_example: pd.DataFrame,
        *,
        name: str = "model",
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        model_type: str | None = None,
        schema_frames: tuple[pd.DataFrame, ...] = (),
    ) -> str:
        """Log the pipeline as an MLflow LoggedModel linked to the run; return its model id.

        Before the files are uploaded, the sha256 of each is recorded as the LoggedModel's
        ``model.files_sha256`` tag, in the tracking store, where ``model_digests.load_verified_model``
        checks them. ``schema_frames`` (the training frames) give the signature's inputs. Any failure (a type the loader would not trust included) marks the model
        FAILED, never READY.
        """
        # Imported only when logging a model.
        from experiments_dagster.tracking.model_digests import digests_tag
        from experiments_dagster.tracking.model_io import save_pyfunc_model

        run = self.client.get_run(run_id)
        model = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=name,
            source_run_id=run_id,
            params={k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in (params or {}).items()},
            tags=dict(tags or {}),
            model_type=model_type,
        )
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "model"
                mlflow_model = Model(
                    artifact_path=model.artifact_location,
                    model_uuid=model.model_id,
                    run_id=run_id,
                    model_id=model.model_id,
                )
                save_pyfunc_model(
                    pipeline, X_example, local, mlflow_model=mlflow_model, schema_frames=schema_frames
                )
                self.client.set_logged_model_tags(model.model_id, digests_tag(local))
                self.client.log_model_artifacts(model.model_id, str(local))
        except BaseException:
            self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id
