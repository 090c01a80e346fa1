"""The launchpad's config of `splits`, as a running webserver serves it, accepts every experiment.yaml key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from experiments_dagster.core.spec import ExperimentSpec, resolve_spec
from experiments_dagster.defs.config import ExperimentConfig
from experiments_dagster_tests.ui_servers import LOCATION, REPOSITORY, dagster_webserver, graphql, ui_env

SCHEMA_QUERY = """
query($selector: PipelineSelector!) {
  runConfigSchemaOrError(selector: $selector) {
    __typename
    ... on RunConfigSchema {
      rootConfigType { key }
      allConfigTypes {
        __typename key
        ... on CompositeConfigType { fields { name description configTypeKey } }
        ... on NullableConfigType { ofType { key } }
        ... on ArrayConfigType { ofType { key } }
        ... on MapConfigType { valueType { key } }
      }
    }
  }
}
"""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a spec field holds (directly, optionally, or as a mapping's values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = get_args(annotation)
    if get_origin(annotation) is dict:
        return _model_in(args[1])
    return next((m for m in map(_model_in, args) if m is not None), None)


def spec_keys(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Every key experiment.yaml accepts (nested as ``a.b``; ``*`` for a mapping's values), with its description."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        if model is ExperimentSpec and name == "dataset":
            continue  # taken from the folder's name
        key = f"{prefix}{name}"
        out[key] = info.description or ""
        nested = _model_in(info.annotation)
        if nested is not None:
            star = ".*" if get_origin(info.annotation) is dict or "dict[" in str(info.annotation) else ""
            out |= spec_keys(nested, f"{key}{star}.")
    return out


def launchpad_keys(types: dict[str, dict], type_key: str, prefix: str = "") -> dict[str, str]:
    """The same walk over the webserver's config types, through Noneable, Array and Map wrappers."""
    config_type = types[type_key]
    kind = config_type["__typename"]
    if kind in ("NullableConfigType", "ArrayConfigType"):
        return launchpad_keys(types, config_type["ofType"]["key"], prefix)
    if kind == "MapConfigType":
        return launchpad_keys(types, config_type["valueType"]["key"], f"{prefix}*.")
    if kind != "CompositeConfigType":
        return {}
    out: dict[str, str] = {}
    for field in config_type["fields"]:
        key = f"{prefix}{field['name']}"
        out[key] = field["description"] or ""
        out |= launchpad_keys(types, field["configTypeKey"], f"{key}.")
    return out


def field_type(types: dict[str, dict], type_key: str, name: str) -> str:
    """The config type key of a composite type's field."""
    return next(f["configTypeKey"] for f in types[type_key]["fields"] if f["name"] == name)


def test_launchpad_config_is_generated_from_the_spec() -> None:
    in_process = launchpad_keys_from_model(ExperimentConfig)
    assert in_process == {k: v for k, v in spec_keys(ExperimentSpec).items() if "*" not in k}
    assert all(in_process.values()), "every key has a description"


def launchpad_keys_from_model(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Top-level and nested fields of the generated Config classes (mappings left out)."""
    out: dict[str, str] = {}
    for name, info in model.model_fields.items():
        out[f"{prefix}{name}"] = info.description or ""
        nested = _model_in(info.annotation)
        if (
            nested is not None
            and get_origin(info.annotation) is not dict
            and "dict[" not in str(info.annotation)
        ):
            out |= launchpad_keys_from_model(nested, f"{prefix}{name}.")
    return out


def test_launchpad_overrides_merge_sections_with_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(
        "target: y\nsearch:\n  n_trials: 4\n  space:\n    max_depth: {type: int, low: 2, high: 4}\n"
    )
    config = ExperimentConfig(search={"enabled": True}, seeds={"cv": 3}, promotion_metric="f1")
    spec = resolve_spec("d", folder, config.overrides())
    assert spec.search.enabled is True
    assert spec.search.n_trials == 4  # from the file, not reset by the launchpad's section
    assert set(spec.search.space) == {"max_depth"}
    assert spec.resolved_seeds.cv == 3 and spec.resolved_seeds.split == 42
    assert spec.promotion_metric == "f1"


@pytest.mark.slow
def test_webserver_launchpad_schema_has_every_experiment_yaml_key(tmp_path: Path, data_dir: Path) -> None:
    env = {**ui_env(tmp_path, data_dir, f"sqlite:///{tmp_path / 'mlflow.db'}"), "EXPERIMENTS_SENSOR": "off"}
    # `dagster dev -w workspace.yaml`, as `make dagster-ui` starts it (the browser test uses `dg dev`).
    with dagster_webserver(tmp_path, env, "dagster dev") as server:
        keys_by_job = {}
        for job in ("__ASSET_JOB", "experiment_job"):
            selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "pipelineName": job}
            answer = graphql(server.url, SCHEMA_QUERY, {"selector": selector})["runConfigSchemaOrError"]
            assert answer["__typename"] == "RunConfigSchema", answer
            types = {t["key"]: t for t in answer["allConfigTypes"]}
            root = answer["rootConfigType"]["key"]
            splits = field_type(types, field_type(types, root, "ops"), "splits")
            keys_by_job[job] = launchpad_keys(types, field_type(types, splits, "config"))
    expected = spec_keys(ExperimentSpec)
    for job, keys in keys_by_job.items():
        assert set(keys) == set(expected), f"{job}: launchpad and experiment.yaml keys differ"
        assert keys == expected, f"{job}: descriptions differ"
    for key in ("search", "search.enabled", "search.space.*.type", "seeds.cv", "registered_model_name"):
        assert keys_by_job["__ASSET_JOB"][key], key
