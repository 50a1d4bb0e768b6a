"""scripts/start_slurm.sh never touches a SLURM it did not start: with fake SLURM/munge commands on PATH (each
records its calls), a SLURM that answers is used as it is, daemons that run without answering and a config the
script did not write are left alone, and only when nothing runs does it write its config and start daemons.
Every outcome is one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "start_slurm.sh"
FAKES = ("slurmctld", "slurmd", "munged", "munge", "unmunge", "scontrol", "runuser", "chown", "kill", "pgrep")


def _fake_bin(tmp_path: Path, sinfo_ok: bool, running: tuple[str, ...] = ()) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    started = tmp_path / "started"  # the fake slurmd makes the fake sinfo answer, as a real one would
    for name in FAKES:
        body = f'echo "{name} $*" >> {log}\n'
        if name == "pgrep":  # pgrep -x NAME: "running" for the daemons given
            body += f'case "$2" in {"|".join(running) or "__none__"}) exit 0 ;; *) exit 1 ;; esac\n'
        elif name == "slurmd":
            body += f"touch {started}\n"
        elif name == "scontrol":
            body += "echo 'Slurmctld(primary) at host is UP'\n"
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
    answer = f'echo "{"debug*" if sinfo_ok else "idle"}"; exit 0'
    (bin_dir / "sinfo").write_text(f'#!/bin/sh\necho "sinfo $*" >> {log}\n'
                                   + (f"{answer}\n" if sinfo_ok else f"[ -e {started} ] && {{ {answer}; }}\nexit 1\n"))
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path, conf: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_CONF": str(conf)}
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    log = tmp_path / "calls.log"
    calls = [ln.split()[0] for ln in log.read_text().splitlines()] if log.exists() else []
    return out, calls


def test_a_running_slurm_is_used_as_it_is(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=theirs\n")
    out, calls = _run(tmp_path, _fake_bin(tmp_path, sinfo_ok=True), conf)
    assert out.returncode == 0 and out.stdout.strip() == "slurm: using the running SLURM (partitions: debug*)"
    assert set(calls) == {"sinfo"} and conf.read_text() == "ClusterName=theirs\n"


@pytest.mark.parametrize("daemon", ["slurmctld", "slurmd"])
def test_daemons_that_do_not_answer_are_left_alone(tmp_path, daemon):
    conf = tmp_path / "slurm.conf"
    out, calls = _run(tmp_path, _fake_bin(tmp_path, sinfo_ok=False, running=(daemon,)), conf)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "left untouched" in out.stderr
    assert set(calls) <= {"sinfo", "pgrep"} and not conf.exists()


def test_a_config_it_did_not_write_is_never_overwritten(tmp_path):
    if os.getuid() != 0:
        pytest.skip("the script reaches the config check only as root")
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=theirs\n")
    out, calls = _run(tmp_path, _fake_bin(tmp_path, sinfo_ok=False), conf)
    assert out.returncode == 1 and "was not written by this script" in out.stderr
    assert conf.read_text() == "ClusterName=theirs\n" and set(calls) <= {"sinfo", "pgrep"}


def test_with_nothing_running_it_writes_its_config_and_starts_the_daemons(tmp_path):
    if os.getuid() != 0:
        pytest.skip("starting daemons needs root")
    conf = tmp_path / "slurm.conf"
    out, calls = _run(tmp_path, _fake_bin(tmp_path, sinfo_ok=False), conf)
    assert out.returncode == 0 and out.stdout.startswith("slurm: started a one-node SLURM"), out.stderr
    assert len(out.stdout.strip().splitlines()) == 1
    assert "ssl-zoo scripts/start_slurm.sh" in conf.read_text().splitlines()[0]
    assert "slurmctld" in calls and "slurmd" in calls and "kill" not in calls
    # run again: the SLURM it started answers now and is used as it is
    before = conf.read_text()
    (tmp_path / "calls.log").unlink()
    out, calls = _run(tmp_path, tmp_path / "bin", conf)
    assert out.returncode == 0 and "using the running SLURM" in out.stdout and set(calls) == {"sinfo"}
    assert conf.read_text() == before
