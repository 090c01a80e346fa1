"""Running the folds of a cross-validation and its refit on a thread pool, in fold order: how many
fits at once, each one's share of the CPUs, and what happens to started folds after an error."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from experiments_dagster.ml.parallel import FoldCancelled
from experiments_dagster.ml.training import FoldResult

log = logging.getLogger("experiments_dagster.ml.cv")  # the cross-validation's log, as before the split


@dataclass(frozen=True)
class FoldCallbacks:
    """``cross_validate_and_refit``'s callbacks, for folds only, run on the calling thread."""

    on_start: Callable[[int], None] | None = None
    on_done: Callable[[FoldResult], None] | None = None
    on_error: Callable[[int, BaseException], None] | None = None
    on_abandon: Callable[[int, BaseException], None] | None = None


class FoldPool:
    """The folds (jobs ``0..n-1``) and the refit (job ``n``, if any) on ``workers`` threads, in order.

    While several fits run, each gets its share of the usable CPUs; the last, partial round of a
    threaded estimator starts when the CPUs are free and shares all of them."""

    def __init__(
        self,
        n: int,
        fold_job: Callable[[int, int, threading.Event], FoldResult],
        refit_job: Callable[[int, threading.Event], Any] | None,
        workers: int,
        threaded: bool,
        callbacks: FoldCallbacks,
    ) -> None:
        self.n, self.fold_job, self.refit_job, self.callbacks = n, fold_job, refit_job, callbacks
        self.jobs = n + 1 if refit_job else n  # job n, when there, is the refit
        self.workers = max(1, min(workers, self.jobs))
        self.threaded = threaded
        self.tail = self.jobs - self.jobs % self.workers  # jobs from here on are the last, partial round
        self.stop = threading.Event()
        self.running: dict[cf.Future[Any], int] = {}
        self.results: dict[int, Any] = {}
        self.opening: int | None = None  # a fold started (on_start returned) but not yet handed to the pool

    def run(self) -> dict[int, Any]:
        """Every job's result by job number; after an error or an interrupt, ``abandon`` and raise."""
        self.pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cv-fold")
        try:
            while len(self.results) < self.jobs:
                self.start_jobs()
                self.collect_finished()
        except BaseException as exc:
            self.abandon(exc)
            raise
        self.pool.shutdown()
        return self.results

    def start_jobs(self) -> None:
        """Start the next jobs while a worker is free (the last, partial round waits, see above)."""
        while len(self.results) + len(self.running) < self.jobs and len(self.running) < self.workers:
            i = len(self.results) + len(self.running)
            if i >= self.tail and self.running and self.threaded:
                break  # the last, partial round waits for the CPUs, then shares all of them
            fits_at_once = self.workers if i < self.tail else self.jobs - self.tail
            if i == self.n:
                assert self.refit_job is not None
                self.running[self.pool.submit(self.refit_job, fits_at_once, self.stop)] = i
                continue
            if self.callbacks.on_start:
                self.callbacks.on_start(i)
            self.opening = i
            self.running[self.pool.submit(self.fold_job, i, fits_at_once, self.stop)] = i
            self.opening = None

    def collect_finished(self) -> None:
        """Wait for a job to finish; record the finished ones in job order, raise the first error."""
        done, _ = cf.wait(self.running, return_when=cf.FIRST_COMPLETED)
        on_done, on_error = self.callbacks.on_done, self.callbacks.on_error
        for future in sorted(done, key=self.running.__getitem__):
            i = self.running.pop(future)
            error = future.exception()
            if error is not None:
                if on_error and i < self.n:
                    on_error(i, error)
                raise error
            self.results[i] = future.result()
            if on_done and i < self.n:
                on_done(self.results[i])

    def abandon(self, exc: BaseException) -> None:
        """Stop: nothing new starts, running fits are not waited for, every started fold is reported."""
        self.stop.set()
        # Returns at once: only fits already running remain, and those are not waited for.
        self.pool.shutdown(wait=False, cancel_futures=True)
        folds_running = {f: i for f, i in self.running.items() if i < self.n}
        c = self.callbacks
        _settle(folds_running, self.opening, exc, c.on_done, c.on_error, c.on_abandon)


def _settle(
    running: dict[cf.Future[FoldResult], int],
    opening: int | None,
    exc: BaseException,
    on_done: Callable[[FoldResult], None] | None,
    on_error: Callable[[int, BaseException], None] | None,
    on_abandon: Callable[[int, BaseException], None] | None,
) -> None:
    """After a failure or an interrupt: report every fold that started and was not yet reported."""
    pending = sorted(
        [(i, f) for f, i in running.items()] + ([(opening, None)] if opening is not None else []),
        key=lambda p: p[0],
    )
    for i, future in pending:
        finished = future is not None and future.done() and not future.cancelled()
        error = future.exception() if finished else None
        try:
            if not finished or isinstance(error, FoldCancelled):
                if on_abandon:
                    on_abandon(i, exc)
            elif error is not None:
                if on_error:
                    on_error(i, error)
            elif on_done:
                on_done(future.result())
        except Exception:  # the first error is the one to raise; this one is only logged
            log.warning("Could not report fold %d after %s", i, type(exc).__name__, exc_info=True)
