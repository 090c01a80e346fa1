"""``experiments-dagster run``: register every dataset version found as a partition, materialize the
experiment job for each, print one row per version."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any

from experiments_dagster.cli.audit import report_reconciled
from experiments_dagster.cli.run_version import UP_TO_DATE, Row, Session, run_versions
from experiments_dagster.cli.shutdown import Shutdown, exit_code
from experiments_dagster.core import paths
from experiments_dagster.core.errors import UsageError
from experiments_dagster.core.profile import Profile


def add_parser(sub: Any) -> None:
    """Add ``run [--dataset D] [--version V] [--select ASSET] [--force] [--reproduction-of RUN_ID]``."""
    p = sub.add_parser("run", help="materialize every dataset version under the data directory")
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    p.add_argument("--version", action="append", help="only this version (repeatable)")
    p.add_argument(
        "--select",
        action="append",
        metavar="ASSET",
        help="materialize only this asset (repeatable; its checks run too; upstream values are reused)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="train every chosen version, even one that is up to date (a complete run with the same "
        "data hash, experiment.yaml and code version exists)",
    )
    p.add_argument(
        "--reproduction-of",
        metavar="RUN_ID",
        help="(used by `reproduce`) train the run's logged config into a new run tagged reproduction.of",
    )
    p.set_defaults(func=cmd_run)


def use_embedded_defaults(profile: Profile) -> None:
    """Persistent DAGSTER_HOME in the project unless the user set one (embedded profile only: the
    production profile's DAGSTER_HOME is checked by ``load_profile``); quiet progress bars."""
    if profile.production:
        return
    home = paths.default_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DAGSTER_HOME", str(home))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cmd_run(args: argparse.Namespace) -> int:
    """Register every version found as a partition and materialize the experiment job for each.

    ``args.profile`` is the deployment profile ``main`` loaded (core/profile.py)."""
    profile: Profile = args.profile
    use_embedded_defaults(profile)
    # Start-up (the imports of Dagster, MLflow, scikit-learn, matplotlib, the instance's and the
    # store's schemas) allocates ~570,000 objects that live until exit, and the garbage collector
    # would traverse them all again and again while they are being created: 1.0 s of a 10 s run
    # on the small workload. So it is paused for the start-up, and what the start-up allocated is
    # then frozen (moved where later collections do not look) before the runs; see
    # ``materialize_versions``. An early return or an error turns it back on here.
    gc.disable()
    # SIGTERM/SIGINT end the command within GRACE_S + RECORD_S (shutdown.py); ``attempt`` names
    # the run under way, for the watcher to record if the run does not stop in time.
    from experiments_dagster.defs.attempts import abandon_attempt

    attempt: dict[str, Any] = {}
    shutdown = Shutdown(lambda signum: abandon_attempt(signum, **attempt))
    shutdown.install()
    try:
        return materialize_versions(args, profile, attempt, shutdown)
    except KeyboardInterrupt:  # a signal between runs (start-up, sweeps): no run of ours is open
        signum = shutdown.signum or signal.SIGINT
        print(f"experiments-dagster run: stopped by {signal.Signals(signum).name}.", file=sys.stderr)
        return exit_code(signum)
    finally:
        shutdown.finish()
        gc.enable()


def materialize_versions(
    args: argparse.Namespace, profile: Profile, attempt: dict[str, Any], shutdown: Shutdown
) -> int:
    """``cmd_run``'s work; it turns the garbage collector back on at the end of the start-up."""
    if not args.select:
        # A full run saves its model with skops and loads it back (checks, promotion). At import,
        # skops.io looks up the module of each of ~840 numpy/scipy functions by scanning
        # sys.modules, so the import costs more the more is loaded: imported first it adds ~0.4 s
        # of CPU to the start-up, imported inside final_model (3,500 modules loaded by then,
        # collector on) 0.9-1.6 s. A run of selected assets imports it when it needs it.
        import skops.io  # noqa: F401
    from experiments_dagster.defs import defs

    versions, refused = chosen_versions(args)
    if not versions:
        print(
            f"No dataset versions found under {paths.data_dir()} (need <dataset>/experiment.yaml "
            "and <dataset>/<version>.csv|.parquet).",
            file=sys.stderr,
        )
        return 1
    job = defs.resolve_job_def("experiment_job")
    selection, run_tags = asset_selection(args, job)
    session = open_session(args, profile, job, selection, run_tags)
    register_partitions(session, versions)
    # End of the start-up: everything allocated so far is kept until exit (see cmd_run).
    gc.freeze()
    gc.enable()
    rows = run_versions(session, versions, attempt, shutdown)
    print_summary(rows, refused, profile)
    if shutdown.signum is not None:
        name = signal.Signals(shutdown.signum).name
        after = f" after {rows[-1][0]}" if rows else ""
        print(f"experiments-dagster run: stopped by {name}{after}.", file=sys.stderr)
        return exit_code(shutdown.signum)
    return 0 if not refused and all(status in ("SUCCESS", UP_TO_DATE) for _, status, _ in rows) else 1


def chosen_versions(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    """The dataset versions ``--dataset``/``--version`` choose, and the refused entries of the chosen
    datasets (printed here, on stderr: they make the exit code non-zero; the valid versions still train)."""
    from experiments_dagster.core.catalog import scan_versions

    def chosen(dataset: str, version: str | None) -> bool:
        return (not args.dataset or dataset in args.dataset) and (
            version is None or not args.version or version in args.version
        )

    scan = scan_versions(paths.data_dir())
    versions = [v for v in scan.versions if chosen(v.dataset, v.version)]
    refused = [r for r in scan.refused if chosen(r.dataset, None)]
    for refusal in refused:
        print(f"experiments-dagster run: refused {refusal.path}: {refusal.reason}", file=sys.stderr)
    return versions, refused


def asset_selection(args: argparse.Namespace, job: Any) -> tuple[list[Any] | None, dict[str, str]]:
    """The assets to materialize (None: all) and the runs' extra tags, from ``--select`` and
    ``--reproduction-of``; an unknown asset name is a usage error."""
    import dagster as dg

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
    return selection, run_tags


def open_session(
    args: argparse.Namespace,
    profile: Profile,
    job: Any,
    selection: list[Any] | None,
    run_tags: dict[str, str],
) -> Session:
    """Open the Dagster instance and the tracking store (a server that is down or refuses the user:
    one line, exit 2), and close the MLflow runs dead Dagster runs left RUNNING."""
    from experiments_dagster.defs.attempts import open_instance
    from experiments_dagster.defs.outcomes import sweep
    from experiments_dagster.tracking.server import check_server
    from experiments_dagster.tracking.store import Tracker

    home = Path(os.environ["DAGSTER_HOME"])
    instance = open_instance(home)
    tracker = Tracker()
    check_server(tracker.client)
    report_reconciled(sweep(tracker, instance), "before this run")
    check_up_to_date = not (args.force or args.select or args.reproduction_of)
    return Session(profile, job, selection, run_tags, home, instance, tracker, check_up_to_date)


def register_partitions(session: Session, versions: list[Any]) -> None:
    """Add the versions the instance does not know yet as partitions of ``DATASET_VERSIONS``."""
    from experiments_dagster.defs.partitions import DATASET_VERSIONS

    known = set(session.instance.get_dynamic_partitions(DATASET_VERSIONS))
    new = [v.partition_key for v in versions if v.partition_key not in known]
    if new:
        session.instance.add_dynamic_partitions(DATASET_VERSIONS, new)


def print_summary(rows: list[Row], refused: list[Any], profile: Profile) -> None:
    """One row per version, then where the stores and UIs are."""
    width = max((len(r[0]) for r in rows), default=0)
    print("\nExperiments:")
    for key, status, where in rows:
        print(f"  {key:<{width}}  {status:<10}  {where}")
    print(f"\nMLflow store:   {paths.default_tracking_uri()}")
    print(f"Dagster home:   {os.environ['DAGSTER_HOME']}")
    if profile.production:
        print(f"MLflow UI:      {profile.tracking_uri}")
        if profile.dagster_url:
            print(f"Dagster UI:     {profile.dagster_url}")
    else:
        print(
            "Open the MLflow UI with `make mlflow-ui` (http://127.0.0.1:5000) and Dagster's with "
            "`make dagster-ui` (http://127.0.0.1:3000)."
        )
    if refused:
        print(f"\n{len(refused)} entries of the data directory were refused (listed on stderr).")
