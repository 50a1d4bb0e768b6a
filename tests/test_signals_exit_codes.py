"""Exit codes in every phase of `ssl-zoo train` / `ssl-zoo eval` when a stop signal arrives (README,
Reliability): 3 and one line (stopped, nothing lost, the same command resumes), never 143 (killed by the
signal's default action): during set-up, the end-of-run evaluation, between the runs of a sweep, in `ssl-zoo
eval`, and while the process exits (a burst of SIGTERMs during training, in a real process:
tests/test_run_ownership_and_status.py, test_a_second_start_is_refused_...).

To land a signal in a phase, one function of that phase sends it to this process before doing its work; the
command runs in process through ssl_zoo.cli.main, as the `ssl-zoo` script runs it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import run_dir_for

from in_process import signal_inside
from tiny import tiny_overrides

RUN = ["device=cpu", "trainer.log_every=1", "monitor.num_images=64"]


def _stopped(code: int, err: list[str], *phrases: str) -> None:
    assert code == 3, (code, err)
    assert len(err) == 1 and err[0].startswith("ssl-zoo: stopped") and err[0].endswith(
        "run the same command again to resume"), err
    for phrase in phrases:
        assert phrase in err[0], err


def _stopped_in_process(capsys, argv: list[str], *phrases: str) -> None:
    code = main(argv)
    _stopped(code, capsys.readouterr().err.strip().splitlines(), *phrases)


@pytest.mark.slow
def test_sigterm_during_the_end_of_run_evaluation_exits_3_and_the_restart_evaluates(tmp_path, capsys,
                                                                                     monkeypatch):
    import ssl_zoo.launch.run
    import ssl_zoo.launch.run_eval

    args = tiny_overrides(tmp_path, *RUN, "trainer.epochs=1", "eval.knn_k=5", "eval.max_train=200")
    run_dir = run_dir_for(load_config(args))
    with monkeypatch.context() as patch:
        signal_inside(patch, ssl_zoo.launch.run, "finish", signal.SIGUSR2)
        _stopped_in_process(capsys, ["train", *args], "stopped at step 21 (the last) during the evaluation",
                            "results.json not written")
    assert not (run_dir / "results.json").exists()
    assert main(["train", *args]) == 0  # the restart: nothing left to train, it evaluates
    out = capsys.readouterr().out
    assert "resuming at step 21/21" in out and "kNN top-1" in out
    before = (run_dir / "results.json").read_bytes()
    assert json.loads(before)["status"] == "finished"

    # `ssl-zoo eval` of that run, stopped while it evaluates: exit 3, results.json and run.lock as they were
    lock = (run_dir / "run.lock").read_bytes()
    signal_inside(monkeypatch, ssl_zoo.launch.run_eval, "evaluate_trained")
    _stopped_in_process(capsys, ["eval", str(run_dir)], "stopped during the evaluation; results.json unchanged")
    assert (run_dir / "results.json").read_bytes() == before and (run_dir / "run.lock").read_bytes() == lock


def test_sigterm_before_training_or_between_runs_exits_3_with_nothing_started(tmp_path, capsys, monkeypatch):
    import ssl_zoo.commands.train
    import ssl_zoo.launch.run

    args = tiny_overrides(tmp_path / "setup", *RUN, "trainer.epochs=1", "eval.enabled=false")
    with monkeypatch.context() as patch:
        signal_inside(patch, ssl_zoo.launch.run, "load_data")  # the signal lands while the data loads
        _stopped_in_process(capsys, ["train", *args], "started; nothing lost")
    assert not (tmp_path / "setup").exists()  # nothing written

    sweep = ["train", "-m", *tiny_overrides(tmp_path / "sweep", *RUN, "trainer.epochs=1", "eval.enabled=false"),
             "seed=0,1"]
    signal_inside(monkeypatch, ssl_zoo.commands.train, "print_results")  # after the first run, before the second
    _stopped_in_process(capsys, sweep, "-s1-", "started; nothing lost")
    runs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name != "jobs")
    assert len(runs) == 1 and "-s0-" in runs[0]
    assert json.loads((tmp_path / "sweep" / runs[0] / "results.json").read_text())["status"] == "finished"


def test_the_stop_handlers_stay_installed_until_the_process_ends():
    """What makes a burst safe: `ssl-zoo` (main() without arguments) never hands SIGTERM back to the default
    action, and a caller in Python (main(argv)) gets its own handler back."""
    from ssl_zoo.common import stopping

    before = signal.getsignal(signal.SIGTERM)
    with stopping.handled(restore=True):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)  # recorded, not raised: outside interruptible()
        assert stopping.code() == 1
        with pytest.raises(stopping.Preempted, match="at once"):
            with stopping.interruptible("at once"):
                pass  # a signal received before the block: raised on entry
    assert signal.getsignal(signal.SIGTERM) is before and stopping.code() == 0  # the next command starts afresh
    with stopping.interruptible("ignored"):  # not under handled(): a SLURM task or Python caller
        pass
    code = subprocess.run([sys.executable, "-c", "import signal; from ssl_zoo.common import stopping\n"
                           "with stopping.handled(restore=False): pass\n"
                           "assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN\n"], timeout=60).returncode
    assert code == 0
