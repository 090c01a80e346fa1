"""MLflow tag names this project writes and reads: one definition each (users' scripts rely on them)."""

DAGSTER_RUN_ID = "dagster.run_id"
# The Dagster run that logged into the run before a re-execution took it over (Tracker.reopen).
DAGSTER_PREVIOUS_RUN_ID = "dagster.previous_run_id"
DAGSTER_PARTITION_KEY = "dagster.partition_key"
DAGSTER_ASSET_KEY = "dagster.asset_key"
WORKER = "worker"  # <hostname>:<pid> of the process that logs (Celery worker child or run process)
DAGSTER_RUN_URL = "dagster.run_url"  # the run in the Dagster UI, when $EXPERIMENTS_DAGSTER_URL is set

ERROR_ASSET = "error.asset"
ERROR_TYPE = "error.type"
ERROR_MESSAGE = "error.message"

RECONCILED_REASON = "reconciled.reason"
CLEANUP_STATUS = "cleanup.status"
MODEL_ID = "model.id"  # on the parent run and on each registry version made from a LoggedModel

AUDIT_STATUS = "audit.status"
AUDIT_PROBLEMS = "audit.problems"

# What an attempt was trained from (versioning.py): up-to-date runs are found by EXPERIMENT_KEY.
CODE_VERSION = "code.version"
CONFIG_HASH = "config.hash"
EXPERIMENT_KEY = "experiment.key"
ATTEMPT = "attempt"  # 1, 2, 3... per dataset version in its experiment; also in the run name

# Reproduction (`experiments-dagster reproduce`): on the rerun, and on the original run.
REPRODUCTION_OF = "reproduction.of"
REPRODUCED_AT = "reproduction.last_at"
REPRODUCED_VERDICT = "reproduction.last_verdict"
REPRODUCED_BY = "reproduction.last_run_id"
