"""Stop signals (SIGTERM, SIGUSR2) for the whole of an `ssl-zoo train` or `ssl-zoo eval` process.

Exit code 3 means "stopped by a signal, nothing lost, the same command resumes". The trainer turns a signal that
arrives during training into a checkpoint and Preempted. Everywhere else the CLI's handlers below apply, so that
no phase of the process dies with the default action (exit 143) and loses the "resumable" answer:
- before a run trains (imports, data, set-up) the signal is recorded; the run then stops at its first step
  boundary (or before it starts, in a sweep) with a checkpoint;
- inside an `interruptible()` block (the end-of-run evaluation, `ssl-zoo eval`) it raises Preempted at once: the
  checkpoint on disk is final and results.json is written whole or not at all;
- once a run's results are saved, or the process is stopping, later signals are only recorded, and once the
  command has returned they are ignored: a burst of SIGTERMs cannot kill the process on its way out.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)  # stop code k = STOP_SIGNALS[k - 1]; the larger code wins


class Preempted(Exception):
    """Raised after the checkpoint that follows a stop signal (or at once where there is nothing to save);
    `signum` says which (SIGUSR2 is submitit's preemption/timeout signal: a SLURM task then requeues itself)."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.signum = signum


class _State:
    code = 0  # the largest stop code received while our handlers were installed
    installed = False
    interrupt: str | None = None  # inside interruptible(): the Preempted message to raise


def _handler(signum: int, frame) -> None:
    _State.code = max(_State.code, STOP_SIGNALS.index(signum) + 1)
    if _State.interrupt is not None:
        message, _State.interrupt = _State.interrupt, None  # raised once: a burst does not interrupt the unwinding
        raise Preempted(message, signum)


def code() -> int:
    """The stop code received so far by the running command (0: none, or no command under handled())."""
    return _State.code


def signum_of(stop_code: int) -> int:
    return STOP_SIGNALS[max(stop_code, 1) - 1]


@contextmanager
def handled(restore: bool = True) -> Iterator[None]:
    """Our handlers for the duration of a command. restore=False (the `ssl-zoo` process itself): the process
    ends right after, and a signal during its exit must not change the exit code, so stop signals are then
    ignored (Python puts the default action back for its own handlers while it shuts down, not for SIG_IGN)."""
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    _State.code, _State.installed, _State.interrupt = 0, True, None
    try:
        yield
    finally:  # what was received belongs to this command: a later one (in the same Python) starts afresh
        _State.code, _State.interrupt, _State.installed = 0, None, False
        for s, h in previous.items():
            signal.signal(s, h if restore else signal.SIG_IGN)


@contextmanager
def interruptible(message: str) -> Iterator[None]:
    """A stop signal inside the block raises Preempted(message) at once (also one received before it). Only
    under handled(): elsewhere (a SLURM task, where submitit owns the signals; Python callers) it does nothing."""
    if not _State.installed or signal.getsignal(signal.SIGTERM) is not _handler:
        yield
        return
    if _State.code:
        raise Preempted(message, signum_of(_State.code))
    outer, _State.interrupt = _State.interrupt, message
    try:
        yield
    finally:
        _State.interrupt = outer
