"""Output read by a reader that stops early (`ssl-zoo status runs --json | head -c 600`, `ssl-zoo train | head -3`).

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises BrokenPipeError wherever the command
happens to print. Inside `guarded_output()` such a write instead points the file descriptor at /dev/null (later
writes, and the interpreter's own flush at exit, then go nowhere rather than raising again) and:
- on stdout, stops a command that handles stop signals (train, eval) as SIGTERM does, never in the middle of a
  file (stopping.request_stop): a training run at its next step boundary with a whole checkpoint (exit 3, the
  same command resumes); an evaluation already under way ends and writes its results. Any other command gets
  ReaderGone, which the CLI ends quietly with EXIT_READER_GONE;
- on stderr, is dropped: a message nobody reads is not a reason to stop.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ssl_zoo.common import stopping

# 128 + SIGPIPE: what the shell reports for cat, grep or yes when a closed pipe stops them, so that a script
# under `set -o pipefail` sees ssl-zoo as it sees them; without pipefail a pipeline's status is the reader's.
EXIT_READER_GONE = 128 + signal.SIGPIPE


class ReaderGone(BrokenPipeError):
    """Standard output's reader has gone (any other broken pipe is a fault, and keeps its traceback)."""


def silence(stream) -> None:
    """Point the stream's file descriptor at /dev/null (nothing when it has none, e.g. a test's capture)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _stdout_closed(stream) -> None:
    silence(stream)
    if stopping.request_stop():  # a command that saves its work: it stops as for SIGTERM, at a safe point
        return
    raise ReaderGone(errno.EPIPE, "the reader of standard output has gone")


class _Guarded:
    """A text stream whose writes and flushes call `closed(stream)` instead of raising BrokenPipeError."""

    def __init__(self, stream, closed):
        self._stream, self._closed = stream, closed

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed(self._stream)
            return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed(self._stream)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def guarded_output() -> Iterator[None]:
    """sys.stdout and sys.stderr as above for the duration of a command; buffered output is flushed at its end,
    inside the guard (a pipe's stdout is block-buffered: a short output reaches the reader only then)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out, _stdout_closed), _Guarded(err, silence)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            sys.stdout, sys.stderr = out, err
