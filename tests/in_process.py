"""ssl-zoo called inside the test process (import: `from in_process import run_main, signal_inside`): its main()
with the exit code a shell would see, and a stop signal that lands inside a chosen function."""

from __future__ import annotations

import os
import signal
import time

from ssl_zoo.cli import main


def run_main(argv: list[str], capture) -> tuple[int, str]:
    """(exit code, stderr) of `ssl-zoo <argv>`; `capture` is pytest's capsys or capfd, emptied first."""
    capture.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's errors exit from the parser
        code = exit_.code
    return code, capture.readouterr().err


def signal_inside(monkeypatch, module, name: str, signum: int = signal.SIGTERM) -> None:
    """module.name sends this process a stop signal, then does its work: the signal lands in that phase."""
    real = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs here, between two bytecodes
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)
