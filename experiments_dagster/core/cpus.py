"""How many CPUs and CV folds one run may use: the affinity mask and the settings
``$EXPERIMENTS_CPUS``, ``$EXPERIMENTS_CV_WORKERS`` and ``$EXPERIMENTS_CV_MEMORY_MB``, read through
``core.settings``. Callers pass the counts to ml/, which reads no setting itself."""

from __future__ import annotations

import os

from experiments_dagster.core import settings


def usable_cpus() -> int:
    """CPUs one run may use: its affinity mask (which containers and taskset narrow), at most
    ``$EXPERIMENTS_CPUS`` so that runs sharing a machine can split it between them."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    cap = settings.integer(
        settings.CPUS_ENV,
        0,
        1,
        "a positive integer, the most CPUs one run's fits may use",
        f"or unset it for all the CPUs this process may run on ({cpus}).",
    )
    return min(cpus, cap) if cap else cpus


def cv_workers(cpus: int) -> int:
    """``$EXPERIMENTS_CV_WORKERS`` (0 when unset: one per CPU within the memory budget)."""
    return settings.integer(
        settings.CV_WORKERS_ENV,
        0,
        1,
        "a positive integer, the number of folds to train at once (1 = one after another)",
        f"or unset it for one per CPU ({cpus}) within ${settings.CV_MEMORY_ENV}.",
    )


def cv_memory_mb() -> int:
    """``$EXPERIMENTS_CV_MEMORY_MB``: MB the folds trained beside the first may use."""
    return settings.integer(
        settings.CV_MEMORY_ENV,
        settings.DEFAULT_CV_MEMORY_MB,
        0,
        "a whole number of MB that folds trained beside the first may use (0 = one fold at a time)",
        f"or unset it for {settings.DEFAULT_CV_MEMORY_MB}.",
    )


def fold_budget() -> dict[str, int]:
    """``ml.parallel.fold_workers``'s keywords from the settings: usable CPUs, explicit workers (0:
    unset) and the memory budget in MB (read only when no worker count is set)."""
    cpus = usable_cpus()
    workers = cv_workers(cpus)
    return {"cpus": cpus, "workers": workers, "memory_mb": 0 if workers else cv_memory_mb()}
