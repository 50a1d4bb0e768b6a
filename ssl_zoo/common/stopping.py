"""Stop signals (SIGTERM, SIGUSR2, and Ctrl-C: SIGINT) for the whole of an `ssl-zoo train` or `ssl-zoo eval` process.

Exit code 3 means "stopped by a signal, nothing lost, the same command resumes". The trainer turns a signal that
arrives during training into a checkpoint and Preempted. Everywhere else the CLI's handlers below apply, so that
no phase of the process dies with the default action (exit 143) and loses the "resumable" answer:
- before a run trains (imports, data, set-up) the signal is recorded; the run then stops at its first step
  boundary (or before it starts, in a sweep) with a checkpoint;
- inside an `interruptible()` block (the end-of-run evaluation, `ssl-zoo eval`) it raises Preempted at once: the
  checkpoint on disk is final and results.json is written whole or not at all;
- once a run's results are saved, or the process is stopping, later signals are only recorded, and once the
  command has returned they are ignored: a burst of SIGTERMs cannot kill the process on its way out.
Ctrl-C stops as SIGTERM does (the step is saved); a Ctrl-C once a stop is on its way aborts at once
(KeyboardInterrupt: exit 130), for someone who will not wait for the checkpoint.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)  # stop code k = STOP_SIGNALS[k - 1]; the larger code wins
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGINT)  # SIGINT (Ctrl-C) carries SIGTERM's code: it never requeues


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


def received(signum: int, code: int) -> int:
    """The stop code once `signum` arrives on top of `code` (what was received before). A Ctrl-C on top of a
    stop already requested raises KeyboardInterrupt: the second Ctrl-C aborts at once."""
    if signum == signal.SIGINT and code:
        raise KeyboardInterrupt
    return max(code, 1 if signum == signal.SIGINT else STOP_SIGNALS.index(signum) + 1)


def install(handler) -> dict:
    """Puts `handler` on every handled signal and returns the handlers it replaced. A SIGINT the process was
    started to ignore (`nohup ... &`) stays ignored."""
    signals = [s for s in HANDLED_SIGNALS if s in STOP_SIGNALS or signal.getsignal(s) is not signal.SIG_IGN]
    return {s: signal.signal(s, handler) for s in signals}


def _handler(signum: int, frame) -> None:
    _State.code = received(signum, _State.code)
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
    previous = install(_handler)
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


def request_stop() -> bool:
    """A stop asked from inside the process (standard output's reader has gone), taken as a SIGTERM by whoever
    handles SIGTERM now (the trainer: a checkpoint at the next step boundary), except that it never interrupts:
    inside interruptible() it is only recorded and the block runs to its end (results.json written or not, as
    it would have been). False when no Python handler takes SIGTERM (a verb that does not stop, a Python caller)."""
    handler = signal.getsignal(signal.SIGTERM)
    if handler is _handler:
        _State.code = received(signal.SIGTERM, _State.code)
        return True
    if callable(handler):
        handler(signal.SIGTERM, None)
        return True
    return False


@contextmanager
def ctrl_c_aborts() -> Iterator[None]:
    """Inside the block Ctrl-C raises KeyboardInterrupt at once (exit 130), as in any Python program: for work
    with no step to save, such as a SLURM submission, which would otherwise run on to its end."""
    if signal.getsignal(signal.SIGINT) is not _handler:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _handler)
