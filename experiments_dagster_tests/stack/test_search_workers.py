"""One search of 20 trials spread over the stack's two Celery workers, sharing one Optuna study
in the stack's PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
import yaml

from experiments_dagster.stack.local import LocalStack
from experiments_dagster_tests.stack.conftest import client_for, copy_dataset, run_cli
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
