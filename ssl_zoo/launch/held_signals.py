"""Stop signals held back while a SLURM submission does what must not be cut in half: the manifest, sbatch and
the job ids written into the manifest.

Inside held() a stop signal (SIGTERM, SIGUSR2, Ctrl-C: any number of them) is only recorded; the submission looks
at what was recorded at its boundaries (before sbatch: stop with nothing submitted; after: report it). Around the
sbatch call itself the signals are also blocked in this thread, so sbatch, started from it, inherits them blocked:
a terminal's Ctrl-C reaches the whole process group, and an sbatch killed halfway could leave a job queued that no
manifest knows of. They are delivered (to the recorder) as soon as sbatch has answered.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ssl_zoo.common import stopping


class Held:
    """The stop signals received inside held(), in order (names, e.g. 'SIGTERM')."""

    def __init__(self):
        self.received: list[str] = []

    def record(self, signum: int, frame) -> None:
        self.received.append(signal.Signals(signum).name)

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """The stop signals blocked in this thread for the block (and in the processes it starts)."""
        before = signal.pthread_sigmask(signal.SIG_BLOCK, stopping.HANDLED_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)  # pending signals reach record() here


@contextmanager
def held() -> Iterator[Held]:
    """Records instead of acting on stop signals for the block, then puts the previous handlers back. Outside
    the main thread (where Python runs no signal handler) it changes nothing."""
    state = Held()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = stopping.install(state.record)
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
