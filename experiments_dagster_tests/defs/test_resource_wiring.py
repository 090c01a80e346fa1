"""One dict of resources per profile: the production one names its URLs with dg.EnvVar, read when
a run initializes the resources; the embedded one keeps every default."""

from __future__ import annotations

import dagster as dg
import pytest

from experiments_dagster.core.profile import PROFILES
from experiments_dagster.defs.definitions import (
    RESOURCES_BY_PROFILE,
    embedded_resources,
    production_resources,
)


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.test")
    monkeypatch.setenv("EXPERIMENTS_S3_URL", "s3://team-bucket/values")
    monkeypatch.setenv("EXPERIMENTS_LOCK_URL", "postgresql://locks@db/one")
    monkeypatch.setenv("EXPERIMENTS_OPTUNA_STORAGE", "postgresql://optuna@db/studies")
    monkeypatch.delenv("EXPERIMENTS_MLFLOW_UI_URL", raising=False)
    # Building the mlflow resource asks the tracking server once; there is none here.
    monkeypatch.setattr("experiments_dagster.defs.resources.check_server", lambda client: None)
    return monkeypatch


def test_one_resource_dict_per_profile() -> None:
    assert set(RESOURCES_BY_PROFILE) == set(PROFILES)
    for make in RESOURCES_BY_PROFILE.values():
        assert set(make()) == {"mlflow", "data", "io_manager", "coordination"}


def test_production_fields_are_env_vars_read_when_a_run_starts(production_env: pytest.MonkeyPatch) -> None:
    resources = production_resources()
    with dg.build_resources({"coordination": resources["coordination"]}) as built:
        assert built.coordination.lock_url == "postgresql://locks@db/one"
        assert built.coordination.study_storage() == "postgresql://optuna@db/studies"
    # The value is the environment's when the resource is built, not when it was defined.
    production_env.setenv("EXPERIMENTS_LOCK_URL", "postgresql://locks@db/two")
    with dg.build_resources({"coordination": resources["coordination"]}) as built:
        assert built.coordination.lock_url == "postgresql://locks@db/two"
    # The config names the variable: unset in the run's process, Dagster refuses to start it.
    production_env.delenv("EXPERIMENTS_LOCK_URL")
    with pytest.raises(Exception, match="EXPERIMENTS_LOCK_URL"):
        with dg.build_resources({"coordination": resources["coordination"]}):
            pass


def test_production_tracking_uri_and_values_url_come_from_the_environment(production_env) -> None:
    resources = production_resources()
    with dg.build_resources({"mlflow": resources["mlflow"]}) as built:
        assert built.mlflow.tracking_uri == "https://mlflow.example.test"
        assert built.mlflow.ui_url is None  # optional and unset: the field's default, no EnvVar
    production_env.setenv("EXPERIMENTS_MLFLOW_UI_URL", "http://mlflow-ui.example.test")
    with dg.build_resources({"mlflow": production_resources()["mlflow"]}) as built:
        assert built.mlflow.ui_url == "http://mlflow-ui.example.test"
    assert dg.Definitions(resources=resources).resolve_job_def  # a valid Definitions


def test_lock_url_falls_back_to_the_instance_database(production_env) -> None:
    production_env.delenv("EXPERIMENTS_LOCK_URL")
    production_env.setenv("EXPERIMENTS_DAGSTER_PG_URL", "postgresql+psycopg2://dagster@db/dagster")
    with dg.build_resources({"coordination": production_resources()["coordination"]}) as built:
        assert built.coordination.lock_url == "postgresql+psycopg2://dagster@db/dagster"
    production_env.delenv("EXPERIMENTS_DAGSTER_PG_URL")
    production_env.delenv("EXPERIMENTS_OPTUNA_STORAGE")
    with dg.build_resources({"coordination": production_resources()["coordination"]}) as built:
        assert (built.coordination.lock_url, built.coordination.study_storage()) == (None, None)


def test_embedded_keeps_the_defaults_whatever_the_environment_holds(production_env) -> None:
    resources = embedded_resources()
    with dg.build_resources(
        {"mlflow": resources["mlflow"], "coordination": resources["coordination"]}
    ) as built:
        assert built.mlflow.tracking_uri is None  # the Tracker resolves $MLFLOW_TRACKING_URI or SQLite
        assert (built.coordination.lock_url, built.coordination.study_storage()) == (None, None)
