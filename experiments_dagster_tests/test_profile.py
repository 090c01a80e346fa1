"""EXPERIMENTS_PROFILE: the embedded default, production's required settings, unknown names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments_dagster.core.errors import ExperimentInputError
from experiments_dagster.core.profile import HTTP_DEFAULTS, PROFILES, load_profile, profile_name

BIN = Path(sys.executable).parent


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("EXPERIMENTS_PROFILE", "production")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.test")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("EXPERIMENTS_S3_URL", "s3://team-bucket/values/")
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    return home


@pytest.mark.parametrize("value", [None, "", "embedded", " Embedded "])
def test_unset_or_embedded_is_the_default_and_reads_nothing_else(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("EXPERIMENTS_PROFILE", raising=False)
    else:
        monkeypatch.setenv("EXPERIMENTS_PROFILE", value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "not even a URL")  # not checked on the embedded default
    profile = load_profile()
    assert profile.name == "embedded" and not profile.production
    assert (profile.tracking_uri, profile.values_url) == (None, None)


def test_unknown_profile_lists_the_valid_ones(monkeypatch):
    monkeypatch.setenv("EXPERIMENTS_PROFILE", "staging")
    with pytest.raises(ExperimentInputError) as err:
        profile_name()
    assert "$EXPERIMENTS_PROFILE='staging' is not a profile; valid profiles: embedded, production" in str(
        err.value
    )
    assert PROFILES == ("embedded", "production")


def test_production_resolves_the_services_and_sets_http_defaults(production, monkeypatch):
    import os

    monkeypatch.setenv("EXPERIMENTS_DAGSTER_URL", "https://dagster.example.test/")
    profile = load_profile()
    assert profile.production
    assert profile.tracking_uri == "https://mlflow.example.test"
    assert profile.values_url == "s3://team-bucket/values"
    assert profile.dagster_url == "https://dagster.example.test"
    assert {k: os.environ[k] for k in HTTP_DEFAULTS} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }


def test_production_keeps_http_settings_the_user_chose(production, monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "45")
    load_profile()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "45"


def test_production_names_every_missing_setting(production, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    monkeypatch.delenv("EXPERIMENTS_S3_URL")
    with pytest.raises(ExperimentInputError) as err:
        load_profile()
    message = str(err.value)
    assert "MLFLOW_TRACKING_URI must be the tracking server's http(s):// URL" in message
    assert "DAGSTER_HOME must be a folder with the PostgreSQL instance's dagster.yaml" in message
    assert "EXPERIMENTS_S3_URL must be s3://<bucket>/<prefix> for asset values (is 'unset')" in message
    assert "`make stack-up`, then `. .stack/env`" in message


def test_cli_exits_2_on_an_unknown_profile(tmp_path):
    result = subprocess.run(
        [str(BIN / "experiments-dagster"), "run"],
        env={"PATH": "/usr/bin:/bin", "EXPERIMENTS_PROFILE": "prod", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        "experiments-dagster run: $EXPERIMENTS_PROFILE='prod' is not a profile; valid profiles: embedded, production"
        in result.stderr
    )


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example.test"])
def test_the_embedded_profile_bounds_waits_on_a_tracking_server_too(monkeypatch, uri):
    import os

    monkeypatch.delenv("EXPERIMENTS_PROFILE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")  # raised by the user: kept
    assert load_profile().name == "embedded"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "60"


def test_a_local_store_leaves_mlflows_http_settings_alone(monkeypatch, tmp_path):
    import os

    monkeypatch.delenv("EXPERIMENTS_PROFILE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    load_profile()
    assert not any(key in os.environ for key in HTTP_DEFAULTS)


def test_a_tracker_on_a_server_named_only_in_config_is_bounded(monkeypatch):
    import os

    from experiments_dagster.tracking.store import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    Tracker("http://127.0.0.1:9")  # no request is made
    assert {k: os.environ[k] for k in HTTP_DEFAULTS} == HTTP_DEFAULTS
