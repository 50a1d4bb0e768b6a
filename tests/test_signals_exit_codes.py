"""Exit codes in every phase of `ssl-zoo train` / `ssl-zoo eval` when SIGTERM arrives (README, Reliability):
3 and one line (stopped, nothing lost, the same command resumes), never 143 (killed by the signal's default
action), whether one signal comes or a burst, during set-up, training, the end-of-run evaluation, between the
runs of a sweep, or in `ssl-zoo eval`.

Each case is a real process. To land a signal in a given phase, the process runs ssl_zoo.cli.main as the
`ssl-zoo` script does, with one function of that phase wrapped to print a marker and wait (for a signal, or 60 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ssl_zoo.checkpoint import find_checkpoint
from ssl_zoo.cli import main
from ssl_zoo.config import load_config, run_dir_for

from tiny import tiny_overrides

# python -c WRAPPER <module> <function> <ssl-zoo arguments...>: <module>.<function> prints PAUSED and waits for a
# stop signal first ("-" wraps nothing). sys.argv is set as the console script sees it: main() without arguments.
WRAPPER = r"""
import importlib, sys, time
from ssl_zoo import stopping
from ssl_zoo.checkpoint import find_checkpoint
from ssl_zoo.cli import main
module, name = sys.argv[1:3]
if module != "-":
    mod = importlib.import_module(module)
    real = getattr(mod, name)
    def paused(*args, **kwargs):
        print("PAUSED", flush=True)
        deadline = time.time() + 60
        while not stopping.code() and time.time() < deadline:
            time.sleep(0.02)
        return real(*args, **kwargs)
    setattr(mod, name, paused)
sys.argv = ["ssl-zoo", *sys.argv[3:]]
sys.exit(main())
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = ["device=cpu", "trainer.log_every=1", "monitor.num_images=64"]


class Process:
    def __init__(self, wrap: str, *args: str):
        module, _, name = wrap.rpartition(".") if wrap != "-" else ("-", "", "-")
        self.proc = subprocess.Popen([sys.executable, "-c", WRAPPER, module, name, *args], env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for(self, prefix: str) -> list[str]:
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if line.startswith(prefix):
                return lines
        pytest.fail(f"no {prefix!r} line; exit {self.proc.wait()}: {self.proc.stderr.read()}")

    def burst(self, count: int = 40, every: float = 0.005) -> None:
        """SIGTERMs until the process has ended (or `count` of them)."""
        for _ in range(count):
            if self.proc.poll() is not None:
                return
            self.proc.send_signal(signal.SIGTERM)
            time.sleep(every)

    def finish(self) -> tuple[int, list[str]]:
        _, err = self.proc.communicate(timeout=240)
        return self.proc.returncode, err.strip().splitlines()


def _stopped(code: int, err: list[str], *phrases: str) -> None:
    assert code == 3, (code, err)
    assert len(err) == 1 and err[0].startswith("ssl-zoo: stopped") and err[0].endswith(
        "run the same command again to resume"), err
    for phrase in phrases:
        assert phrase in err[0], err


@pytest.mark.slow
def test_a_burst_of_sigterms_during_training_exits_3_with_a_checkpoint(tmp_path):
    args = tiny_overrides(tmp_path, *RUN, "trainer.epochs=100", "eval.enabled=false")
    proc = Process("-", "train", *args)
    proc.wait_for("epoch 1/100")
    proc.burst()
    code, err = proc.finish()
    _stopped(code, err, "stopped at step")
    step = int(err[0].split("stopped at step ")[1].split(";")[0])
    run_dir = run_dir_for(load_config(args))
    assert find_checkpoint(run_dir)[0]["step"] == step  # the same command resumes there
    assert not (run_dir / "results.json").exists()


@pytest.mark.slow
def test_sigterm_during_the_end_of_run_evaluation_exits_3_and_the_restart_evaluates(tmp_path, capsys):
    args = tiny_overrides(tmp_path, *RUN, "trainer.epochs=1", "eval.knn_k=5", "eval.max_train=200")
    run_dir = run_dir_for(load_config(args))
    proc = Process("ssl_zoo.run.finish", "train", *args)
    proc.wait_for("PAUSED")
    proc.burst()
    code, err = proc.finish()
    _stopped(code, err, "stopped at step 21 (the last) during the evaluation", "results.json not written")
    assert not (run_dir / "results.json").exists()
    assert main(["train", *args]) == 0  # the restart: nothing left to train, it evaluates
    out = capsys.readouterr().out
    assert "resuming at step 21/21" in out and "kNN top-1" in out
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished"

    # `ssl-zoo eval` of that run, stopped while it evaluates: exit 3, results.json untouched
    before = (run_dir / "results.json").read_bytes()
    proc = Process("ssl_zoo.run_eval.evaluate_trained", "eval", str(run_dir))
    proc.wait_for("PAUSED")
    proc.burst()
    code, err = proc.finish()
    _stopped(code, err, "stopped during the evaluation; results.json unchanged")
    assert (run_dir / "results.json").read_bytes() == before


@pytest.mark.slow
def test_sigterm_before_training_or_between_runs_exits_3_with_nothing_started(tmp_path):
    args = tiny_overrides(tmp_path / "setup", *RUN, "trainer.epochs=1", "eval.enabled=false")
    proc = Process("ssl_zoo.run.load_data", "train", *args)  # the signal lands while data loads
    proc.wait_for("PAUSED")
    proc.burst()
    code, err = proc.finish()
    _stopped(code, err, "started; nothing lost")
    assert not (tmp_path / "setup").exists()  # nothing written

    sweep = ["train", "-m", *tiny_overrides(tmp_path / "sweep", *RUN, "trainer.epochs=1", "eval.enabled=false"),
             "seed=0,1"]
    proc = Process("ssl_zoo.commands.train.print_results", *sweep)  # after the first run, before the second
    proc.wait_for("PAUSED")
    proc.burst()
    code, err = proc.finish()
    _stopped(code, err, "-s1-", "started; nothing lost")
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name != "jobs")
    assert len(runs) == 1 and "-s0-" in runs[0]
    assert json.loads((tmp_path / "sweep" / runs[0] / "results.json").read_text())["status"] == "finished"


def test_the_stop_handlers_stay_installed_until_the_process_ends():
    """What makes a burst safe: `ssl-zoo` (main() without arguments) never hands SIGTERM back to the default
    action, and a caller in Python (main(argv)) gets its own handler back."""
    from ssl_zoo import stopping

    before = signal.getsignal(signal.SIGTERM)
    with stopping.handled(restore=True):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, not raised: outside interruptible()
        assert stopping.code() == 1
        with pytest.raises(stopping.Preempted, match="at once"):
            with stopping.interruptible("at once"):
                pass  # a signal received before the block: raised on entry
    assert signal.getsignal(signal.SIGTERM) is before
    with stopping.interruptible("ignored"):  # not under handled(): a SLURM task or Python caller
        pass
    code = subprocess.run([sys.executable, "-c", "import signal; from ssl_zoo import stopping\n"
                           "with stopping.handled(restore=False): pass\n"
                           "assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN\n"],
                          env=ENV, timeout=60).returncode
    assert code == 0
