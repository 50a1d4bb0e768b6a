"""SLURM's queue as data: what `ssl-zoo status` shows and what a resubmission must not start twice."""

from __future__ import annotations

import getpass
import subprocess


def squeue() -> dict[str, tuple[str, str]] | None:
    """{job id (123 or 123_4): (state, reason)} of this user's queued and running jobs; None without squeue."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            jobs[parts[0]] = (parts[1], parts[2])
    return jobs
