"""The step a lost Celery worker ran, read from the run failure dagster-celery writes."""

from experiments_dagster.defs.reconciliation import lost_step_in

# The message as dagster-celery's core_execution_loop builds it: "[<step key>]: <error>" per step.
HEAD = "During celery execution errors occurred in workers:\n"
LOST = "celery.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 3."


def test_a_plain_step_key():
    assert lost_step_in(f"{HEAD}[fold_models]: {LOST}\n\nStack Trace: ...") == ("fold_models", LOST)


def test_a_mapped_step_key_keeps_its_brackets():
    found = lost_step_in(f"{HEAD}[search_trials.search_worker[1]]: {LOST}")
    assert found == ("search_trials.search_worker[1]", LOST)


def test_the_first_of_several_lost_steps():
    message = f"{HEAD}[search_trials.search_worker[0]]: {LOST}\n[fold_models]: {LOST}"
    assert lost_step_in(message) == ("search_trials.search_worker[0]", LOST)


def test_no_step_named():
    assert lost_step_in("Execution of run failed.") is None
    assert lost_step_in("") is None
