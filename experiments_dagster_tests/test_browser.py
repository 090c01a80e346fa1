"""The `dg dev` path as a user meets it, in a real headless Chromium: materialize a partition by
clicking, read its checks and MLflow link, follow the link, run a search from the launchpad."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from experiments_dagster.core.paths import PROJECT_ROOT
from experiments_dagster_tests.ui_servers import dagster_webserver, graphql, mlflow_ui, ui_env

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# Screenshots go to tmp; set UI_SCREENSHOTS_DIR (e.g. docs/) to keep them (README's come from here).
SCREENSHOTS_ENV = "UI_SCREENSHOTS_DIR"
PARTITION = "iris/v1"
SEARCH_TRIALS = 3
RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId jobName status
  tags { key value } } } } }"""


def wait_for(what: str, probe: Callable[[], object], timeout: float = 300, every: float = 2) -> object:
    """``probe()``'s first truthy value, polled until ``timeout`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def screenshot(driver, path: Path) -> None:
    """The browser's viewport as a small PNG (256-colour palette), for artifacts and the README."""
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=256).save(path, optimize=True)


def runs(url: str) -> list[dict]:
    """Every Dagster run, newest first, from the webserver's GraphQL API."""
    return graphql(url, RUNS_QUERY)["runsOrError"]["results"]


def finished_run(url: str, known: set[str], expected: str = "SUCCESS") -> dict | None:
    """The one run not in ``known`` once it has finished (fails if it did not end ``expected``)."""
    new = [r for r in runs(url) if r["runId"] not in known]
    if not new or new[0]["status"] not in {"SUCCESS", "FAILURE", "CANCELED"}:
        return None
    assert new[0]["status"] == expected, new[0]
    return new[0]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    """Headless Debian Chromium driven by its chromedriver (Selenium Manager is never asked to download)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "no chromium/chromedriver on PATH: install Debian's `chromium` and `chromium-driver` "
            "(.ci/run does) to run the browser test"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(
        options=options, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    )
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def test_dg_dev_materialize_checks_mlflow_link_and_search_in_the_browser(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "data"
    (data / "iris").mkdir(parents=True)
    for name in ("experiment.yaml", "v1.csv"):
        shutil.copy(PROJECT_ROOT / "data" / "iris" / name, data / "iris" / name)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    env = ui_env(tmp_path, data, tracking_uri)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    env["EXPERIMENTS_SENSOR"] = "off"  # this test clicks; the sensor would train the version itself

    def page(url: str) -> str:
        browser.get(url)
        time.sleep(3)
        for skip in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
            skip.click()  # Dagster's first-visit newsletter dialog
        return browser.find_element(By.TAG_NAME, "body").text

    def click(xpath: str) -> None:
        browser.find_element(By.XPATH, xpath).click()
        time.sleep(1)

    def text_appears(needle: str, timeout: float = 60) -> str:
        return wait_for(
            repr(needle),
            lambda: needle in (body := browser.find_element(By.TAG_NAME, "body").text) and body,
            timeout,
        )

    with (
        mlflow_ui(tmp_path, tracking_uri) as mlflow_server,
        dagster_webserver(tmp_path, {**env, "EXPERIMENTS_MLFLOW_UI_URL": mlflow_server.url}, "dg dev") as ui,
    ):
        # 1. Materialize one partition by clicking: the job's "Materialize all", a new partition.
        job_page = f"{ui.url}/locations/experiments_dagster/jobs/experiment_job"
        assert "dataset_version_sensor" in page(job_page)
        click("//button[contains(., 'Materialize all')]")
        click("//*[normalize-space(text())='Add a partition']")
        browser.find_element(By.XPATH, "//input[@placeholder='name']").send_keys(PARTITION)
        click("//button[normalize-space()='Save']")
        click("//button[normalize-space()='Launch 1 run']")
        first = wait_for("the clicked run to succeed", lambda: finished_run(ui.url, set()), timeout=400)
        tags = {t["key"]: t["value"] for t in first["tags"]}
        assert first["jobName"] == "experiment_job" and tags["dagster/partition"] == PARTITION
        assert tags["dagster/from_ui"] == "true"

        # 2. The partition page: the check reads "Passed", the MLflow link is there.
        page(f"{ui.url}/assets/final_model?view=checks")
        text_appears("Passed")
        assert "final_model_logged_completely" in browser.find_element(By.TAG_NAME, "body").text
        body = page(f"{ui.url}/assets/final_model?view=partitions&partition={PARTITION.replace('/', '%2F')}")
        assert "accuracy" in body and body.count("\naccuracy\n") == 1  # each metric once
        links = [
            a.get_attribute("href")
            for a in browser.find_elements(By.TAG_NAME, "a")
            if (a.get_attribute("href") or "").startswith(f"{mlflow_server.url}/#/experiments/")
        ]
        assert links, "no MLflow run link on the partition page"
        screenshot(browser, shots / "dagster-asset-partition.png")
        client = MlflowClient(tracking_uri)
        parent_id = links[0].rsplit("/", 1)[1]
        parent = client.get_run(parent_id)
        assert parent.info.run_name == "iris@v1 #1" and parent.data.tags["dagster.run_id"] == first["runId"]

        # 3. Follow the link: MLflow's run page shows the run's name.
        browser.get(links[0])
        text_appears("iris@v1 #1")
        time.sleep(2)
        screenshot(browser, shots / "mlflow-run.png")

        # 4. The plots: one markdown entry on evaluation_plots, opened with one click.
        page(f"{ui.url}/assets/evaluation_plots?view=partitions&partition={PARTITION.replace('/', '%2F')}")
        click("//*[normalize-space(text())='[Show Markdown]']")
        images = wait_for(
            "the plots in the markdown dialog",
            lambda: [
                i
                for i in browser.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']")
                if i.get_attribute("naturalWidth") not in (None, "0")
            ],
            timeout=30,
        )
        assert len(images) == 4  # confusion matrix, feature importance, ROC, PR (multiclass)
        screenshot(browser, shots / "dagster-plots.png")

        # 5. An asset page's Materialize: Dagster's implicit __ASSET_JOB, found by the partition tag.
        known = {r["runId"] for r in runs(ui.url)}
        page(f"{ui.url}/assets/raw_data")
        click("//button[contains(., 'Materialize')]")
        click("//button[normalize-space()='All']")  # the one partition, iris/v1
        click("//button[starts-with(normalize-space(), 'Launch 1 run')]")
        asset_run = wait_for("the asset page's run", lambda: finished_run(ui.url, known), timeout=300)
        asset_tags = {t["key"]: t["value"] for t in asset_run["tags"]}
        assert asset_run["jobName"] == "__ASSET_JOB" and asset_tags["dagster/partition"] == PARTITION
        assert asset_tags["dagster/from_ui"] == "true"

        # 5b. A version without its file: the run's failure summary says which file is missing.
        known = {r["runId"] for r in runs(ui.url)}
        page(job_page)
        click("//button[contains(., 'Materialize all')]")
        click("//*[normalize-space(text())='Add a partition']")
        browser.find_element(By.XPATH, "//input[@placeholder='name']").send_keys("iris/v9")
        click("//button[normalize-space()='Save']")
        click("//button[normalize-space()='Launch 1 run']")
        failed = wait_for("the run to fail", lambda: finished_run(ui.url, known, "FAILURE"), timeout=300)
        page(f"{ui.url}/runs/{failed['runId']}")
        summary = text_appears("RUN_FAILURE")
        summary = summary[summary.index("RUN_FAILURE") :][:600]
        assert "Steps failed: ['raw_data']" in summary and "v9" in summary, summary
        assert summary.index("v9") < summary.index("Stack Trace") if "Stack Trace" in summary else True
        screenshot(browser, shots / "dagster-run-failure.png")

        # 6. Search on in the launchpad: the partition, the `splits` config, Launch Run.
        known = {r["runId"] for r in runs(ui.url)}
        page(f"{job_page}/playground")
        partition_box = browser.find_element(By.XPATH, "//input[@placeholder='Partition']")
        partition_box.send_keys(PARTITION)
        time.sleep(1)
        partition_box.send_keys(Keys.ENTER)
        time.sleep(2)
        config = {
            "ops": {
                "splits": {
                    "config": {
                        "search": {
                            "enabled": True,
                            "n_trials": SEARCH_TRIALS,
                            "space": {"max_depth": {"type": "int", "low": 2, "high": 4}},
                        }
                    }
                }
            }
        }
        browser.execute_script(
            "document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])", json.dumps(config)
        )
        time.sleep(2)
        text_appears("No errors", timeout=30)
        click("//button[contains(., 'Launch Run')]")
        search_run = wait_for("the search run to succeed", lambda: finished_run(ui.url, known), timeout=600)
        assert search_run["jobName"] == "experiment_job"

        # Trial runs appear: nested under the search run's parent, one per trial, in MLflow's UI too.
        parents = client.search_runs(
            [parent.info.experiment_id], f"tags.`dagster.run_id` = '{search_run['runId']}'"
        )
        search_parent = next(r for r in parents if "mlflow.parentRunId" not in r.data.tags)
        trials = [r for r in parents if r.data.tags.get("mlflow.parentRunId") == search_parent.info.run_id]
        trial_names = sorted(r.info.run_name for r in trials if r.info.run_name.startswith("trial-"))
        assert len(trial_names) == SEARCH_TRIALS, trial_names
        assert search_parent.data.params["search.enabled"] == "true"
        browser.get(
            f"{mlflow_server.url}/#/experiments/{parent.info.experiment_id}/runs/{trials[0].info.run_id}"
        )
        text_appears(trials[0].info.run_name)
        screenshot(browser, shots / "mlflow-trial-run.png")
