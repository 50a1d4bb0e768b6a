"""Ctrl-C during `ssl-zoo train`, in a real process: sent to the whole process group, as a terminal sends it. The
first saves the current step (exit 3, one line that says so); a second aborts at once (exit 130). Either way the
same command resumes, and the run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train
from ssl_zoo.runs.identity import run_dir_for

from tiny import tiny_overrides

EXTRA = ["deterministic=true", "trainer.epochs=3", "trainer.batch_size=32", "eval.enabled=false"]
TOTAL_STEPS = 3 * (1347 // 32)


def _weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["method"]


def _step(run_dir) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"])


def _ctrl_c(args: list[str]) -> subprocess.CompletedProcess:
    """Starts the run and presses Ctrl-C once it has trained a little."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", "train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    first = proc.stdout.readline()  # "run ...: new run" / "resuming": set up, training starts
    time.sleep(1.5)  # some steps in, usually mid-epoch
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)


def test_ctrl_c_saves_the_current_step_and_the_same_command_resumes_it(tmp_path):
    ref_dir = train(load_config(tiny_overrides(tmp_path / "ref", *EXTRA)))
    args = tiny_overrides(tmp_path / "run", *EXTRA)
    run_dir = run_dir_for(load_config(args))

    stopped = _ctrl_c(args)
    assert stopped.returncode == 3, stopped.stderr
    err = stopped.stderr.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(r"ssl-zoo: stopped at step (\d+); checkpoint saved; run the same command "
                                          r"again to resume", err[0]), err
    step = int(re.search(r"step (\d+)", err[0]).group(1))
    assert _step(run_dir) == step < TOTAL_STEPS  # the step it stopped at is the one saved, not the epoch's start

    resumed = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", *args], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {step}/{TOTAL_STEPS}" in resumed.stdout
    ref, got = _weights(ref_dir), _weights(run_dir)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def test_a_second_ctrl_c_aborts_at_once_and_the_rerun_resumes(tmp_path, capsys, monkeypatch):
    from ssl_zoo.cli import main
    from ssl_zoo.train.trainer import Trainer

    real = Trainer._train_step

    def pressed_twice_at_step_5(self, *a, **kw):
        if self.step == 5:
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # each press is handled on its own
        return real(self, *a, **kw)

    args = tiny_overrides(tmp_path, *EXTRA, "trainer.epochs=1")
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", pressed_twice_at_step_5)
        assert main(["train", *args]) == 130
    assert capsys.readouterr().err.strip() == "ssl-zoo: interrupted"
    assert main(["train", *args]) == 0  # resumes from the checkpoint written before (step 0)
    assert "resuming at step 0/" in capsys.readouterr().out


def test_ctrl_c_outside_training_is_recorded_a_second_aborts_and_an_ignored_one_stays_ignored():
    from ssl_zoo.common import stopping

    def press() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs here

    with stopping.handled(restore=True):
        press()  # during set-up: recorded, the run stops at its first step with nothing lost
        assert stopping.code() == 1
        with pytest.raises(KeyboardInterrupt):
            press()
    with stopping.handled(restore=True), stopping.ctrl_c_aborts():  # a SLURM submission: nothing to save
        with pytest.raises(KeyboardInterrupt):
            press()
    code = subprocess.run([sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                           "from ssl_zoo.common import stopping\n"
                           "with stopping.handled(): assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"],
                          timeout=60).returncode
    assert code == 0  # `nohup ssl-zoo train &`: started to ignore Ctrl-C, it still does


def test_ctrl_c_to_a_streamed_run_with_loader_workers_saves_the_step(tmp_path):
    """A terminal's Ctrl-C reaches the data loader's worker processes too: they must not die under the trainer."""
    from ssl_zoo.data.streaming import synthetic

    folder = synthetic.write_folder(tmp_path / "folder", ["c000", "c001"], 12, 3, sizes=(48, 64))
    base = [a for a in tiny_overrides(tmp_path / "runs") if a not in ("data=digits", "trainer.batch_size=64")]
    args = [*base, "data=imagefolder", f"data.root={folder}", f"data.index_dir={tmp_path / 'index'}",
            "data.image_size=32", "data.workers=2", "trainer.batch_size=8", "trainer.steps=5000",
            "monitor.num_images=8", "eval.enabled=false"]
    run_dir = run_dir_for(load_config(args))
    stopped = _ctrl_c(args)
    assert stopped.returncode == 3, stopped.stderr
    err = stopped.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("checkpoint saved; run the same command again to resume"), err
    assert _step(run_dir) == int(re.search(r"step (\d+)", err[0]).group(1)) > 0
