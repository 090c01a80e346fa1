"""The audit's check of each kind of requirement: one ``_check_<kind>`` method per ``standard.Kind``.

``RequirementChecks`` is the base of ``audit.Auditor``: a check reads the run's record (status,
params, tags, metrics), its artifacts (listed once per run, downloaded only to be inspected),
its logged model (loaded through the gate of ``model_gate.py``) or its nested runs (CV folds,
search trials), and returns its findings. Choosing the requirements and running the checks of
one run: ``audit.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run

from experiments_dagster.core.spec import ExperimentSpec
from experiments_dagster.tracking import tags
from experiments_dagster.tracking.artifact_files import png_problem
from experiments_dagster.tracking.audit_findings import Finding, Status
from experiments_dagster.tracking.known_estimators import hyperparameter_names
from experiments_dagster.tracking.model_gate import RefusedModel, load_gated_model, model_uri_of
from experiments_dagster.tracking.standard import Requirement, metric_names

DEFAULT_THRESHOLDS = tuple(f"{t:g}" for t in ExperimentSpec.model_fields["thresholds"].default)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class RequirementChecks:
    """What each kind of requirement checks; ``audit.Auditor`` sets the state below per run."""

    client: MlflowClient
    load_models: bool
    _tmp: Path  # the run's temporary folder (downloads, a loaded model)
    _local_root: Path | None  # the run's artifact folder when the store is local
    _artifacts: dict[str, int]  # every artifact of the run: path -> size

    def _download(self, run_id: str, path: str) -> Path:
        if self._local_root is not None and (self._local_root / path).is_file():
            return self._local_root / path  # a local store: read in place (a copy costs ~0.1 s per file)
        return Path(self.client.download_artifacts(run_id, path, str(self._tmp)))

    @staticmethod
    def _found(req: Requirement, status: Status, detail: str = "", name: str | None = None) -> Finding:
        return Finding(req.kind, name or req.name, req.asset, status, detail)

    # --- one method per kind of requirement -------------------------------------------------
    def _check_status(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        status = run.info.status
        if status == "FINISHED":
            return [self._found(req, "present")]
        error = run.data.tags.get(tags.ERROR_MESSAGE, "")
        return [self._found(req, "missing", f"run is {status}" + (f": {error}" if error else ""))]

    def _check_param(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        value = run.data.params.get(req.name)
        return [self._found(req, "present" if value not in (None, "") else "missing")]

    def _check_tag(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        value = run.data.tags.get(req.name)
        if value in (None, ""):
            return [self._found(req, "missing")]
        if value == "unknown":
            return [self._found(req, "malformed", "value is 'unknown'")]
        return [self._found(req, "present")]

    def _metric(self, run: Run, req: Requirement, name: str) -> Finding:
        value = run.data.metrics.get(name)
        if value is None:
            return self._found(req, "missing", name=name)
        if not _finite(value):
            return self._found(req, "malformed", f"value is {value}", name=name)
        return self._found(req, "present", name=name)

    def _check_metric(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        return [self._metric(run, req, req.name)]

    def _check_cv_metric(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        return [self._metric(run, req, f"cv_{m}_{s}") for m in metric_names(task) for s in ("mean", "std")]

    def _check_threshold_metrics(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        raw = run.data.params.get("thresholds")
        try:
            thresholds = [f"{float(t):g}" for t in raw.split(",")] if raw else list(DEFAULT_THRESHOLDS)
        except ValueError:
            return [
                self._found(
                    req, "malformed", f"param thresholds={raw!r} is not a comma-separated list of numbers"
                )
            ]
        return [
            self._metric(run, req, f"{m}_threshold_{t}")
            for t in thresholds
            for m in ("f1", "precision", "recall")
        ]

    def _check_hyperparameters(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        model_type = run.data.params.get("model_type")
        if not model_type:
            return [self._found(req, "missing", "no model_type param to know the hyperparameters")]
        # Looked up in a fixed table, never imported: the param is text the run's writer chose.
        expected = hyperparameter_names(model_type)
        if expected is None:
            return [
                self._found(
                    req,
                    "malformed",
                    f"model_type {model_type[:200]!r} is not a scikit-learn or XGBoost estimator the "
                    "audit knows (it looks names up, never imports them); its hyperparameters "
                    "cannot be verified",
                )
            ]
        missing = sorted(expected - set(run.data.params))
        if missing:
            return [self._found(req, "missing", f"hyperparameters not logged: {', '.join(missing)}")]
        return [self._found(req, "present", f"{len(expected)} hyperparameters")]

    def _check_artifact(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        size = self._artifacts.get(req.name)
        if size is None:
            return [self._found(req, "missing")]
        path = self._download(run.info.run_id, req.name)
        text = path.read_text(errors="replace")
        if not text.strip():
            return [self._found(req, "malformed", "file is empty")]
        if req.name.endswith(".json"):
            try:
                json.loads(text)
            except ValueError as exc:
                return [self._found(req, "malformed", f"not valid JSON: {exc}")]
        if req.name == "requirements.txt" and "==" not in text:
            return [self._found(req, "malformed", "no pinned requirement (name==version)")]
        return [self._found(req, "present")]

    def _check_png(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        if req.name not in self._artifacts:
            return [self._found(req, "missing")]
        problem = png_problem(self._download(run.info.run_id, req.name).read_bytes())
        return [self._found(req, "malformed", problem) if problem else self._found(req, "present")]

    def _check_model(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        uri = model_uri_of(run, self._artifacts)
        if uri is None:
            return [self._found(req, "missing", "no logged model")]
        if not self.load_models:
            return [self._found(req, "present", uri)]
        try:
            ours = tags.DAGSTER_RUN_ID in run.data.tags
            model, note = load_gated_model(self.client, uri, self._tmp / "model", ours=ours)
            example = model.input_example
            if example is not None:
                model.predict(example)
        except RefusedModel as exc:
            return [self._found(req, "malformed", f"{uri} is not loaded: {exc}"[:500])]
        except Exception as exc:  # a broken model raises many types
            return [
                self._found(
                    req, "malformed", f"{uri} does not load/predict: {type(exc).__name__}: {exc}"[:500]
                )
            ]
        if model.metadata.signature is None:
            return [self._found(req, "malformed", f"{uri} has no signature")]
        return [self._found(req, "present", uri + note)]

    def _check_pickle(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        if req.name not in self._artifacts:
            return [self._found(req, "missing")]
        expected = run.data.tags.get("model.pickle_sha256")
        actual = hashlib.sha256(self._download(run.info.run_id, req.name).read_bytes()).hexdigest()
        if expected and expected != actual:
            return [
                self._found(req, "malformed", f"sha256 {actual[:12]}… does not match tag {expected[:12]}…")
            ]
        return [
            self._found(
                req,
                "present" if expected else "malformed",
                "" if expected else "no model.pickle_sha256 tag to verify it",
            )
        ]

    def _check_dataset_input(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        inputs = run.inputs.dataset_inputs if run.inputs else []
        if not inputs:
            return [self._found(req, "missing", "no mlflow.log_input dataset")]
        data_hash = run.data.params.get("data.hash") or run.data.tags.get("data.hash")
        if data_hash and not any(i.dataset.digest == data_hash[:36] for i in inputs):
            return [self._found(req, "malformed", "no dataset input carries the data.hash digest")]
        return [self._found(req, "present")]

    def _check_nested_runs(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        children = self.client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=1000
        )
        folds = [c for c in children if "fold" in c.data.params or c.data.tags.get("cv.fold") is not None]
        expected = run.data.params.get("cv.folds")
        if expected is not None and not expected.isdigit():
            return [self._found(req, "malformed", f"param cv.folds={expected!r} is not a whole number")]
        if expected is not None and len(folds) != int(expected):
            return [self._found(req, "missing", f"{len(folds)} fold runs, cv.folds is {expected}")]
        if not folds:
            return [self._found(req, "missing", "no nested CV fold runs")]
        problems = []
        for child in folds:
            if child.info.status != "FINISHED":
                problems.append(f"{child.info.run_name} is {child.info.status}")
            bad = [m for m in metric_names(task) if not _finite(child.data.metrics.get(m))]
            if bad:
                problems.append(f"{child.info.run_name} lacks {', '.join(bad)}")
        if problems:
            return [self._found(req, "malformed", "; ".join(problems))]
        return [self._found(req, "present", f"{len(folds)} folds")]

    def _check_search(self, run: Run, req: Requirement, task: str) -> list[Finding]:
        params = run.data.params
        if params.get("search.enabled") != "true":
            return [self._found(req, "n/a", "no search configured")]
        space = list(json.loads(params.get("search.space", "{}")))
        problems = [f"best.{k} not logged" for k in space if f"best.{k}" not in params]
        if not _finite(run.data.metrics.get("best_score")):
            problems.append("best_score missing or not finite")
        for name in ("search_trials.csv", "optimization_history.png"):
            if not self._artifacts.get(name):
                problems.append(f"{name} missing")
        trials = self.client.search_runs(
            [run.info.experiment_id],
            f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.`trial.number` != ''",
            max_results=10_000,
        )
        expected = params.get("search.trials_run")
        if expected is None or not expected.isdigit() or len(trials) != int(expected):
            problems.append(f"{len(trials)} trial runs logged, search.trials_run is {expected}")
        for trial in trials:
            state = trial.data.tags.get("trial.state")
            # A trial killed before its objective drew every parameter has only those it drew.
            missing = [k for k in space if k not in trial.data.params] if state != "FAIL" else []
            if state is None or missing:
                problems.append(f"{trial.info.run_name} lacks state or params {missing}")
        if problems:
            return [self._found(req, "missing", "; ".join(problems[:10]))]
        return [self._found(req, "present", f"{len(trials)} trials")]
