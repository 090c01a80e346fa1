"""SIGTERM and SIGINT end `experiments-dagster run` within a bounded time, whatever it waits on.

While a run executes, Dagster turns both signals into a flag that it raises only inside an asset's
body; a signal that arrives while Dagster's own code waits on the network (a failure hook's call to
a tracking server that accepts but never answers) waits for every retry and timeout of every call.
So the command does not rely on the signal's handler alone: ``signal.set_wakeup_fd`` writes each
signal's number to a pipe whatever Python handler is installed, and a watcher thread reading it
gives the run ``GRACE_S`` to stop on its own (its runs are then marked KILLED by the asset that
was interrupted). After that the watcher records the abandonment itself (the Dagster run
CANCELED, its MLflow runs KILLED, each within ``RECORD_S``) and ends the process with SIGKILL,
the one way a thread can end it at once through public APIs. What could not be written then
(a tracking server that is gone) is closed by the reconciler: the Dagster run is CANCELED, so its
MLflow runs become KILLED at the next sweep.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

GRACE_S = 5.0  # for the run to stop on its own after the first signal
RECORD_S = 5.0  # for the watcher's own records after that
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """Watches for SIGTERM/SIGINT from ``install()`` (main thread) to ``finish()``.

    ``signum`` is the first signal received (None until then). ``abandon(signum)`` is called from
    the watcher thread once ``GRACE_S`` has passed (at once on a second signal) and gets
    ``RECORD_S``; then the process is killed.
    """

    def __init__(self, abandon: Callable[[int], None], grace_s: float = GRACE_S, record_s: float = RECORD_S):
        self.abandon, self.grace_s, self.record_s = abandon, grace_s, record_s
        self.signum: int | None = None
        self._hurry = threading.Event()
        self._finished = threading.Event()
        self._read_fd = self._write_fd = -1
        self._previous: tuple = ()

    def install(self) -> None:
        """SIGTERM raises KeyboardInterrupt like SIGINT; both are watched from now on."""
        previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous = (previous_term, signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False))
        threading.Thread(target=self._watch, name="shutdown-watcher", daemon=True).start()

    def finish(self) -> None:
        """The command is about to return (main thread): the watcher kills nothing any more, and
        the handler and wakeup fd before ``install`` are back (a caller in the same process)."""
        self._finished.set()
        self._hurry.set()
        if self._previous:
            signal.signal(signal.SIGTERM, self._previous[0])
            signal.set_wakeup_fd(self._previous[1])
            os.close(self._write_fd)  # the watcher reads end-of-file and returns
            self._previous = ()

    def _watch(self) -> None:
        while not self._finished.is_set():
            try:
                received = os.read(self._read_fd, 16)
            except OSError:
                return
            if not received:
                os.close(self._read_fd)
                return
            for signum in received:
                if signum not in SIGNALS:
                    continue
                if self.signum is None:
                    self.signum = signum
                    threading.Thread(target=self._deadline, name="shutdown-deadline", daemon=True).start()
                else:
                    self._hurry.set()  # a second signal: do not wait for the grace period

    def _deadline(self) -> None:
        self._hurry.wait(self.grace_s)
        if self._finished.is_set():
            return
        name = signal.Signals(self.signum or signal.SIGTERM).name
        print(
            f"experiments-dagster run: stopped by {name}; the run did not stop within {self.grace_s:.0f} s, "
            "so it is recorded as CANCELED and the process ends now (its MLflow runs not closed "
            "now are closed KILLED by the reconciler).",
            file=sys.stderr,
            flush=True,
        )
        recorder = threading.Thread(target=self._record, name="shutdown-records", daemon=True)
        recorder.start()
        recorder.join(self.record_s)
        if not self._finished.is_set():
            os.kill(os.getpid(), signal.SIGKILL)

    def _record(self) -> None:
        try:
            self.abandon(self.signum or signal.SIGTERM)
        except Exception:  # a store that is gone: the reconciler closes the runs later
            log.warning("could not record the stopped run", exc_info=True)


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum
