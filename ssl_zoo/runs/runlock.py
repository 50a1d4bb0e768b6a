"""One process at a time in a run directory: an OS lock (flock) on <run>/run.lock.

`ssl-zoo train` holds it from before its first write to the end of the run (under DDP only rank 0 takes it, for
all ranks), `ssl-zoo eval` while it evaluates and rewrites results.json. The kernel drops the lock when its
process ends, however it ends (a SIGKILLed run or a requeued SLURM task leaves no stale lock), so the file's
content means nothing by itself: it names the holder (pid, host, command, start time) for the refusal message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from ssl_zoo.common.errors import UserError
from ssl_zoo.runs.layout import LOCK

NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # file systems without flock
_HELD: set[int] = set()  # descriptors of the locks this process holds


def _close_in_child() -> None:
    """A forked child (a DataLoader worker) shares the lock: it must not keep it alive once its parent is gone.
    Closing its copy leaves the parent's lock in place."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class RunInUse(UserError):
    """Another process holds the run directory."""


def _describe(info: dict | None) -> str:
    if not info or "pid" not in info:
        return "another process (it has not named itself yet)"
    since = f", since {info['started']}" if info.get("started") else ""
    return f"pid {info['pid']} on {info.get('host', '?')} ({info.get('command', 'ssl-zoo')}{since})"


def _in_use(run_dir: Path, info: dict | None) -> str:
    return (f"{run_dir} is in use by {_describe(info)}: one process at a time may write a run; wait for it to end "
            "or stop it (the same command then resumes the run)")


def _read_info(path: Path) -> dict | None:
    try:
        with open(path, "rb") as f:
            info = json.loads(f.read(4096).decode(errors="replace"))
    except (OSError, ValueError, RecursionError):
        return None
    return {k: " ".join(str(v).split())[:200] for k, v in info.items()} if isinstance(info, dict) else None


class RunLock:
    """A held lock (fd None: nothing held); release() or the end of the process frees it."""

    def __init__(self, path: Path, fd: int | None = None, made: list[Path] | None = None):
        self.path, self.fd, self.made = path, fd, made or []
        self.leave_as_found = False
        self.found: bytes | None = None  # the lock file's earlier content (None: there was none)

    def release(self, remove_if_unused: bool = False) -> None:
        """Frees the lock. With leave_as_found the lock file gets its earlier content back (or goes when there
        was none). remove_if_unused: a start that failed before writing anything removes
        the folders it created (when the lock file is all they hold)."""
        if self.fd is None:
            return
        try:  # every change below is made while still locked: a process that opened the old file retries
            if remove_if_unused and self.made and [p.name for p in self.made[0].iterdir()] == [LOCK]:
                self.path.unlink()
                for folder in self.made:
                    folder.rmdir()
            elif self.leave_as_found and self.found is None:
                self.path.unlink()
            elif self.leave_as_found:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, self.found, 0)
        except OSError:
            pass
        finally:
            _HELD.discard(self.fd)
            os.close(self.fd)  # drops the flock
            self.fd = None


def acquire(run_dir: Path, command: str, create: bool = True, leave_as_found: bool = False) -> RunLock:
    """Takes the run directory's lock and writes the holder into the lock file; RunInUse (one line naming the
    holder) when another process has it.
    create: make run_dir (and its parents) when missing; otherwise a missing run_dir is not locked (the caller
    reports it). leave_as_found: release() puts the lock file back as it was (`ssl-zoo eval`, which must leave
    a run it refuses untouched). A file system without locks gets one warning line and no lock."""
    made = []
    probe = run_dir
    while create and not probe.exists() and probe.parent != probe:
        made.append(probe)
        probe = probe.parent
    path = run_dir / LOCK
    if not run_dir.is_dir():
        if not create:
            return RunLock(path)
        run_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(20):  # retried only when the file was removed between open and flock
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a read-only copy: nothing can be written there, so no writer to keep out
            if not create:
                return RunLock(path)
            raise UserError(f"cannot write {path}: {err.strerror}; fix the permissions or set out_dir= "
                            "elsewhere") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunInUse(_in_use(run_dir, _read_info(path))) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in NO_LOCKS:
                raise UserError(f"cannot lock {path}: {err.strerror}") from err
            print(f"ssl-zoo: warning: cannot lock {path} ({err.strerror}): this file system has no locks, so a "
                  "second process on this run would not be refused", file=sys.stderr, flush=True)
            return RunLock(path)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file another process had just removed: lock the one now at that path
    else:
        raise UserError(f"cannot lock {path}: it keeps being replaced")
    lock = RunLock(path, fd, [p for p in made if p.is_dir()])
    _HELD.add(fd)
    lock.leave_as_found = leave_as_found
    lock.found = os.pread(fd, 1 << 16, 0) if leave_as_found and existed else None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, only its message names no one
        pass
    return lock


def holder(run_dir: Path) -> dict | None:
    """Who holds the run directory now ({pid, host, command, started}; {} when it has not named itself), None
    when no process does. Writes nothing (status may run on a read-only copy)."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_info(path) or {}
    except OSError:
        return None
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return None


def refuse_if_held(run_dir: Path) -> None:
    """RunInUse (the message acquire gives) when another process holds the run now. Writes nothing: a verb asks
    first, then checks everything else, and takes the lock last, so that a refused command leaves no trace."""
    info = holder(run_dir)
    if info is not None:
        raise RunInUse(_in_use(run_dir, info))
