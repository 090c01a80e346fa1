"""One search of 20 trials spread over the stack's two Celery workers, sharing one Optuna study
in the stack's PostgreSQL; a worker SIGKILLed in the middle of a search."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

import optuna
import pytest
import yaml

from devstack.local import LocalStack
from experiments_dagster.ml.search_study import WORKER_ATTR
from experiments_dagster_tests.stack.conftest import (
    client_for,
    copy_dataset,
    reexecute_from_failure,
    run_cli,
    start_cli,
)
from experiments_dagster_tests.stack.test_workers import worker_pids

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SPACE = {
    "max_depth": {"type": "int", "low": 2, "high": 5},
    "learning_rate": {"type": "float", "low": 0.02, "high": 0.3, "log": True},
}


def test_search_of_twenty_trials_on_two_workers_shares_one_study(stack: LocalStack, stack_env: dict):
    folder = copy_dataset(stack_env, "iris", as_name="search_iris")
    spec = yaml.safe_load((folder / "experiment.yaml").read_text())
    spec["hyperparameters"]["n_estimators"] = 20
    spec["search"] = {"enabled": True, "n_trials": 20, "workers": 2, "seed": 5, "cv_folds": 3, "space": SPACE}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))
    result = run_cli(stack_env, "run", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    client = client_for(stack_env)
    exp = client.get_experiment_by_name("search_iris")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    trials = [r for r in runs if "trial.number" in r.data.tags]
    # 20 nested trial runs under the parent, one per trial number, whichever worker ran it.
    assert sorted(int(r.data.tags["trial.number"]) for r in trials) == list(range(20))
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in trials)  # complete or pruned
    pools = worker_pids(stack)
    ran_on = {
        service
        for r in trials
        for service, pids in pools.items()
        if int(r.data.tags["worker"].split(":")[1]) in pids
    }
    assert ran_on == {"celery-worker-1", "celery-worker-2"}  # both workers ran trials
    # One study in the stack's PostgreSQL, holding exactly 20 finished trials.
    storage = stack_env["EXPERIMENTS_OPTUNA_STORAGE"]
    names = [
        s.study_name for s in optuna.get_all_study_summaries(storage) if parent.info.run_id in s.study_name
    ]
    assert len(names) == 1
    study = optuna.load_study(study_name=names[0], storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 20 and set(states) <= {
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    }
    # The best params on the parent and in the final model are the study's best.
    best = study.best_trial
    params = parent.data.params
    assert int(params["best.max_depth"]) == best.params["max_depth"]
    assert float(params["best.learning_rate"]) == pytest.approx(best.params["learning_rate"])
    assert int(params["max_depth"]) == best.params["max_depth"]
    assert float(params["learning_rate"]) == pytest.approx(best.params["learning_rate"])
    audit = run_cli(stack_env, "audit", "--experiment", "search_iris")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def running_study(storage: str, prefix: str, deadline: float) -> optuna.Study:
    """The study whose name starts with ``prefix`` (``<experiment>-<parent run id>``), once it exists."""
    while time.monotonic() < deadline:
        names = [
            s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith(prefix)
        ]
        if names:
            (name,) = names
            return optuna.load_study(study_name=name, storage=storage)
        time.sleep(0.5)
    raise AssertionError(f"no study {prefix}* was created")


def test_a_worker_killed_during_a_search_fails_its_trial_and_the_search_reaches_its_count(
    stack: LocalStack, stack_env: dict
):
    folder = copy_dataset(stack_env, "iris", as_name="killed_search_iris")
    spec = yaml.safe_load((folder / "experiment.yaml").read_text())
    spec["hyperparameters"]["n_estimators"] = 300  # trials of seconds: the kill lands in one
    n_trials = 8
    spec["search"] = {
        "enabled": True,
        "n_trials": n_trials,
        "workers": 2,
        "seed": 5,
        "cv_folds": 3,
        "pruning": False,
        "space": SPACE,
    }
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))
    storage = stack_env["EXPERIMENTS_OPTUNA_STORAGE"]
    process = start_cli(stack_env, "run")
    try:
        deadline = time.monotonic() + 300
        study = running_study(storage, "killed_search_iris-", deadline)
        pools = set().union(*worker_pids(stack).values())
        killed = victim = None
        while killed is None and time.monotonic() < deadline:
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                pid = int(t.user_attrs.get(WORKER_ATTR, ":0").split(":")[1])
                # A trial started just now on a Celery worker's pool process: it is mid-trial.
                started = t.datetime_start.timestamp() if t.datetime_start else 0
                if pid in pools and time.time() - started < 1.0:
                    os.kill(pid, signal.SIGKILL)
                    killed, victim = t.number, pid
                    break
            time.sleep(0.1)
        assert killed is not None, "no search trial was seen running on a worker"
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    # The killed step fails the run (the other worker step still ends the search first).
    assert process.returncode == 1, stdout + stderr
    assert re.search(r"killed_search_iris/v1 +FAILURE +search_trials\.search_worker\[", stdout), stdout
    assert "signal 9" in stdout, stdout
    trials = {t.number: t for t in optuna.load_study(study_name=study.study_name, storage=storage).trials}
    assert trials[killed].state.name == "FAIL"  # failed as stale by the surviving worker step
    assert trials[killed].user_attrs[WORKER_ATTR].endswith(f":{victim}")
    states = Counter(t.state.name for t in trials.values())
    assert states == {"COMPLETE": n_trials, "FAIL": 1}, states  # the count is still reached
    client = client_for(stack_env)
    exp_id = client.get_experiment_by_name("killed_search_iris").experiment_id
    runs = client.search_runs([exp_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]  # all closed
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    # Closed by whichever saw it first: the daemon's reconciler while the other worker step still
    # ran (the parent's process tags named the killed process, the last step to log into it), or
    # the command once the run had failed (naming the lost step).
    reason = parent.data.tags["reconciled.reason"]
    assert reason == f"process {victim} died (killed or out of memory)" or (
        "search_trials.search_worker[" in reason and "signal 9" in reason
    ), reason
    trial_runs = {int(r.data.tags["trial.number"]): r for r in runs if "trial.number" in r.data.tags}
    assert sorted(trial_runs) == sorted(trials)
    assert trial_runs[killed].info.status == "FAILED"
    assert trial_runs[killed].data.tags["error.message"].startswith("stale: no heartbeat from its worker")

    # Re-execution from failure runs the failed worker step (the count is reached: no trial) and
    # the rest of the experiment, on the same study.
    result = reexecute_from_failure(stack_env, parent.data.tags["dagster.run_id"])
    assert result.returncode == 0 and result.stdout.split()[-1] == "True", result.stdout + result.stderr
    after = optuna.load_study(study_name=study.study_name, storage=storage).trials
    assert Counter(t.state.name for t in after) == states  # no trial more
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    best = max((t for t in after if t.state.name == "COMPLETE"), key=lambda t: (t.value, -t.number))
    assert int(parent.data.params["best.max_depth"]) == best.params["max_depth"]
    runs = client.search_runs([exp_id], max_results=1000)
    assert len([r for r in runs if "trial.number" in r.data.tags]) == n_trials + 1  # none logged twice
    assert not [r for r in runs if r.info.status == "RUNNING"]
    audit = run_cli(stack_env, "audit", "--experiment", "killed_search_iris")
    assert audit.returncode == 0, audit.stdout + audit.stderr
