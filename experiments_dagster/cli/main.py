"""``experiments-dagster``: run every dataset version, audit, reproduce, serve a champion, print paths."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from experiments_dagster.cli.audit import cmd_audit, report_reconciled
from experiments_dagster.cli.shutdown import Shutdown, exit_code
from experiments_dagster.cli.version_failures import storage_failure, version_failure
from experiments_dagster.core import paths
from experiments_dagster.core.errors import ExperimentInputError, UsageError
from experiments_dagster.core.profile import CELERY, Profile, load_profile

PROFILE = Profile("embedded")  # set by main() from EXPERIMENTS_PROFILE
UP_TO_DATE = "up to date"


def _use_embedded_defaults() -> None:
    """Persistent DAGSTER_HOME in the project unless the user set one (embedded profile only: the
    production profile's DAGSTER_HOME is checked by ``load_profile``); quiet progress bars."""
    if PROFILE.production:
        return
    home = paths.default_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cmd_run(args: argparse.Namespace) -> int:
    """Register every version found as a partition and materialize the experiment job for each."""
    _use_embedded_defaults()
    # Start-up (the imports of Dagster, MLflow, scikit-learn, matplotlib, the instance's and the
    # store's schemas) allocates ~570,000 objects that live until exit, and the garbage collector
    # would traverse them all again and again while they are being created: 1.0 s of a 10 s run
    # on the small workload. So it is paused for the start-up, and what the start-up allocated is
    # then frozen (moved where later collections do not look) before the runs; see
    # ``_materialize_versions``. An early return or an error turns it back on here.
    gc.disable()
    # SIGTERM/SIGINT end the command within GRACE_S + RECORD_S (shutdown.py); ``attempt`` names
    # the run under way, for the watcher to record if the run does not stop in time.
    from experiments_dagster.defs.attempts import abandon_attempt

    attempt: dict[str, Any] = {}
    shutdown = Shutdown(lambda signum: abandon_attempt(signum, **attempt))
    shutdown.install()
    try:
        return _materialize_versions(args, attempt, shutdown)
    except KeyboardInterrupt:  # a signal between runs (start-up, sweeps): no run of ours is open
        signum = shutdown.signum or signal.SIGINT
        print(f"experiments-dagster run: stopped by {signal.Signals(signum).name}.", file=sys.stderr)
        return exit_code(signum)
    finally:
        shutdown.finish()
        gc.enable()


def _materialize_versions(args: argparse.Namespace, attempt: dict[str, Any], shutdown: Shutdown) -> int:
    """``cmd_run``'s work; it turns the garbage collector back on at the end of the start-up."""
    if not args.select:
        # A full run saves its model with skops and loads it back (checks, promotion). At import,
        # skops.io looks up the module of each of ~840 numpy/scipy functions by scanning
        # sys.modules, so the import costs more the more is loaded: imported first it adds ~0.4 s
        # of CPU to the start-up, imported inside final_model (3,500 modules loaded by then,
        # collector on) 0.9-1.6 s. A run of selected assets imports it when it needs it.
        import skops.io  # noqa: F401
    import dagster as dg

    from experiments_dagster.core.catalog import scan_versions
    from experiments_dagster.defs import defs
    from experiments_dagster.defs.console import CONSOLE_RUN_CONFIG
    from experiments_dagster.defs.definitions import experiment_job_on_workers
    from experiments_dagster.defs.partitions import DATASET_VERSIONS

    def chosen(dataset: str, version: str | None) -> bool:
        return (not args.dataset or dataset in args.dataset) and (
            version is None or not args.version or version in args.version
        )

    scan = scan_versions(paths.data_dir())
    versions = [v for v in scan.versions if chosen(v.dataset, v.version)]
    # Refused entries of the chosen datasets are reported and make the exit code non-zero;
    # the valid versions still train.
    refused = [r for r in scan.refused if chosen(r.dataset, None)]
    for refusal in refused:
        print(f"experiments-dagster run: refused {refusal.path}: {refusal.reason}", file=sys.stderr)
    if not versions:
        print(
            f"No dataset versions found under {paths.data_dir()} (need <dataset>/experiment.yaml "
            "and <dataset>/<version>.csv|.parquet).",
            file=sys.stderr,
        )
        return 1
    job = defs.resolve_job_def("experiment_job")
    selection = None
    if args.select:
        assets = {key.to_user_string() for key in job.asset_layer.asset_graph.get_all_asset_keys()}
        unknown = sorted(set(args.select) - assets)
        if unknown:
            raise UsageError(
                f"--select {', '.join(unknown)}: no such asset; choose from {', '.join(sorted(assets))}."
            )
        selection = [dg.AssetKey(name) for name in args.select]
    run_tags: dict[str, str] = {}
    if args.reproduction_of:
        from experiments_dagster.defs.jobs import reproduction_selection
        from experiments_dagster.tracking.tags import REPRODUCTION_OF

        run_tags = {REPRODUCTION_OF: args.reproduction_of}
        selection = reproduction_selection(job)
    from experiments_dagster.defs.attempts import (
        ATTEMPT_TAG,
        AttemptInProgress,
        attempt_run,
        open_instance,
        partition_attempt,
    )
    from experiments_dagster.defs.heartbeat import RunHeartbeat, first_beat
    from experiments_dagster.defs.lifecycle import step_failure
    from experiments_dagster.defs.outcomes import sweep
    from experiments_dagster.experiment.registry import BLOCKED, RECOVERY
    from experiments_dagster.experiment.up_to_date import up_to_date_url
    from experiments_dagster.tracking.run_lookup import runs_left_running
    from experiments_dagster.tracking.server import check_server, server_problem
    from experiments_dagster.tracking.store import Tracker

    home = Path(os.environ["DAGSTER_HOME"])
    instance = open_instance(home)
    tracker = Tracker()
    check_server(tracker.client)  # a tracking server that is down or refuses the user: one line, exit 2
    report_reconciled(sweep(tracker, instance), "before this run")
    known = set(instance.get_dynamic_partitions(DATASET_VERSIONS))
    new = [v.partition_key for v in versions if v.partition_key not in known]
    if new:
        instance.add_dynamic_partitions(DATASET_VERSIONS, new)
    # End of the start-up: everything allocated so far is kept until exit (see cmd_run).
    gc.freeze()
    gc.enable()
    rows = []
    for v in versions:
        if not (args.force or args.select or args.reproduction_of):
            try:
                done = up_to_date_url(tracker, v, paths.data_dir())
            except Exception as exc:  # one version's failure never stops the others
                rows.append(
                    (v.partition_key, "FAILURE", version_failure(exc, "checking whether it is up to date"))
                )
                continue
            if done is not None:
                rows.append((v.partition_key, UP_TO_DATE, done))
                continue
        if shutdown.signum is not None:  # stopped while the previous version ran: no new run
            break
        run_id = str(uuid.uuid4())  # known before the run starts, so a crash can still be traced to it
        attempt.update(instance=instance, tracker=tracker, attempt_id=run_id)
        beat = {ATTEMPT_TAG: run_id, **first_beat()}
        # The data folder travels in the run's config: on Celery, steps read it on the workers.
        run_config = {
            **CONSOLE_RUN_CONFIG,
            "resources": {"data": {"config": {"data_dir": str(paths.data_dir())}}},
        }
        try:
            # The heartbeat tells the reconciler this run's worker is alive (heartbeat.py).
            with partition_attempt(instance, home, v.partition_key, run_id), RunHeartbeat(instance, run_id):
                if PROFILE.executor == CELERY:
                    # The run's process orchestrates; its steps go to the workers (execute_job
                    # with the reconstructable job; execute_in_process runs everything here).
                    result = dg.execute_job(
                        dg.reconstructable(experiment_job_on_workers),
                        instance=instance,
                        run_config=run_config,
                        tags={"dagster/partition": v.partition_key, **beat, **run_tags},
                        raise_on_error=False,
                        asset_selection=selection,
                    )
                    run_id = result.run_id
                else:
                    result = job.execute_in_process(
                        partition_key=v.partition_key,
                        instance=instance,
                        raise_on_error=False,
                        run_config=run_config,
                        asset_selection=selection,
                        run_id=run_id,
                        tags={**beat, **run_tags},
                    )
        except AttemptInProgress as exc:
            print(f"experiments-dagster run: {exc}", file=sys.stderr)
            rows.append((v.partition_key, "BUSY", str(exc)))
            continue
        except Exception as exc:  # the instance itself failed (disk full, I/O error): one line, runs closed
            if PROFILE.executor == CELERY:  # execute_job raised: find its run by the attempt tag
                made = attempt_run(instance, run_id)
                run_id = made.run_id if made else run_id
            for run in runs_left_running(tracker, run_id):
                tracker.mark_failed(run.info.run_id, "dagster", exc)
            why = storage_failure(exc, home) or version_failure(exc, "running it")
            print(f"experiments-dagster run: {v.partition_key}: {why}", file=sys.stderr)
            rows.append((v.partition_key, "FAILURE", why))
            continue
        if result.success:
            materialized = [e.materialization.metadata for e in result.get_asset_materialization_events()]
            urls = [meta["mlflow_run_url"].value for meta in materialized if "mlflow_run_url" in meta]
            blocked = [m["reason"].value for m in materialized if _text(m.get("decision")) == BLOCKED]
            if blocked:  # trained and logged, but the champion could not be scored: exit non-zero
                rows.append((v.partition_key, "BLOCKED", f"{blocked[-1]} {RECOVERY}"))
                continue
            rows.append((v.partition_key, "SUCCESS", urls[-1] if urls else result.run_id))
            continue
        try:
            report_reconciled(sweep(tracker, instance, result.run_id), "after its Dagster run failed")
        except Exception as exc:
            # The tracking server went away with the step: the reconciler closes the runs later.
            problem = server_problem(exc, tracker.tracking_uri)
            if problem is None:
                raise
            print(
                f"experiments-dagster run: {v.partition_key}: its MLflow runs cannot be closed now ({problem}) "
                "The reconciler marks them FAILED once the server answers (the daemon's "
                "mlflow_run_reconciler, or the next `run` or `audit`).",
                file=sys.stderr,
            )
        failed = step_failure(instance, result.run_id)
        why = f"{failed[0]}: {failed[1]}" if failed else "the run failed"
        rows.append((v.partition_key, "FAILURE", f"{why} (Dagster run {result.run_id})"))
    width = max((len(r[0]) for r in rows), default=0)
    print("\nExperiments:")
    for key, status, where in rows:
        print(f"  {key:<{width}}  {status:<10}  {where}")
    print(f"\nMLflow store:   {paths.default_tracking_uri()}")
    print(f"Dagster home:   {os.environ['DAGSTER_HOME']}")
    if PROFILE.production:
        print(f"MLflow UI:      {PROFILE.tracking_uri}")
        if PROFILE.dagster_url:
            print(f"Dagster UI:     {PROFILE.dagster_url}")
    else:
        print(
            "Open the MLflow UI with `make mlflow-ui` (http://127.0.0.1:5000) and Dagster's with "
            "`make dagster-ui` (http://127.0.0.1:3000)."
        )
    if refused:
        print(f"\n{len(refused)} entries of the data directory were refused (listed on stderr).")
    if shutdown.signum is not None:
        name = signal.Signals(shutdown.signum).name
        after = f" after {rows[-1][0]}" if rows else ""
        print(f"experiments-dagster run: stopped by {name}{after}.", file=sys.stderr)
        return exit_code(shutdown.signum)
    return 0 if not refused and all(status in ("SUCCESS", UP_TO_DATE) for _, status, _ in rows) else 1


def _text(value: object) -> str | None:
    """A Dagster metadata entry's text (None when absent)."""
    return None if value is None else str(getattr(value, "value", value))


def cmd_paths(args: argparse.Namespace) -> int:
    """Print the resolved store locations (used by the Makefile's UI targets)."""
    if args.tracking_uri:
        print(paths.default_tracking_uri())
        return 0
    print(f"data_dir={paths.data_dir()}")
    print(f"tracking_uri={paths.default_tracking_uri()}")
    print(f"dagster_home={os.environ.get('DAGSTER_HOME') or paths.default_dagster_home()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="experiments-dagster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize every dataset version under the data directory")
    run.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    run.add_argument("--version", action="append", help="only this version (repeatable)")
    run.add_argument(
        "--select",
        action="append",
        metavar="ASSET",
        help="materialize only this asset (repeatable; its checks run too; upstream values are reused)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="train every chosen version, even one that is up to date (a complete run with the same "
        "data hash, experiment.yaml and code version exists)",
    )
    run.add_argument(
        "--reproduction-of",
        metavar="RUN_ID",
        help="(used by `reproduce`) train the run's logged config into a new run tagged reproduction.of",
    )
    run.set_defaults(func=cmd_run)
    where = sub.add_parser("paths", help="print the data directory, tracking URI and DAGSTER_HOME")
    where.add_argument("--tracking-uri", action="store_true", help="print only the tracking URI")
    where.set_defaults(func=cmd_paths)
    audit = sub.add_parser("audit", help="audit MLflow runs against the logging standard")
    audit.add_argument("--experiment", required=True, help="MLflow experiment name")
    audit.add_argument("--run-id", help="audit only this run (default: every top-level run)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of tables")
    audit.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or the embedded one)"
    )
    audit.set_defaults(func=cmd_audit)
    from experiments_dagster.cli.reproduce import add_parser as add_reproduce
    from experiments_dagster.cli.serve import add_parser as add_serve

    add_reproduce(sub)
    add_serve(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global PROFILE
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        PROFILE = load_profile()  # EXPERIMENTS_PROFILE: a bad name or missing setting exits 2
        return args.func(args)
    except (UsageError, ExperimentInputError) as exc:
        print(f"experiments-dagster {args.command}: {exc}", file=sys.stderr)
        return 2


def console_main() -> NoReturn:
    """The ``experiments-dagster`` command."""
    code = main()
    # A normal exit (threads joined, atexit handlers run, streams flushed, modules torn down),
    # minus the garbage collector's last passes over everything the imports of Dagster, MLflow,
    # scikit-learn and friends allocated (gc.freeze: they are skipped): measured 7.3 s -> 5.6 s
    # for importing the code location and exiting. Every store write is committed when its call
    # returns, so nothing depends on those collections.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    # `python -m experiments_dagster.cli.main` (how `reproduce` starts its rerun): run the module as
    # imported, so the exception types main() catches are those the other modules raise.
    from experiments_dagster.cli.main import console_main as imported_main

    imported_main()
