"""One process per run directory (ssl_zoo.runs.runlock), nothing unpickled from a run or sweep folder, and
`ssl-zoo status` on odd folders.

The lock's other holder is a forked child (fast: no imports) or, in the slow test, a real `ssl-zoo train`
process that is then SIGKILLed: the restart must find no stale lock.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssl_zoo import api
from ssl_zoo.cli import main
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.runs import atomic
from ssl_zoo.runs.checkpoint import find_checkpoint
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.layout import LOCK as LOCK_NAME
from ssl_zoo.runs.rundir import check_existing
from ssl_zoo.runs.runlock import RunInUse, acquire, holder

from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------------------------
@contextmanager
def held_by_child(run_dir: Path, create: bool = True):
    """A forked child holds the run directory's lock until the block ends (then it is SIGKILLed). Yields its pid."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: take the lock, say so, wait to be killed
        try:
            os.close(read)
            acquire(run_dir, "ssl-zoo train", create=create)
            os.write(write, b"1")
            time.sleep(120)
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1", "the child could not take the lock"
        yield pid
    finally:
        os.close(read)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _tree(root: Path) -> dict:
    """Every path under root: kind, size, mtime and content hash (a write of any kind changes it)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns, digest)
    return out


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-zoo: error: "), err
    return err[0]


def _fabricated_run(tmp_path: Path, *extra: str) -> tuple[list[str], Path]:
    """A run directory as a start leaves it just before its first checkpoint: config.yaml only."""
    args = [*tiny_overrides(tmp_path / "runs", "device=cpu", "eval.enabled=false", "trainer.epochs=1"), *extra]
    cfg = load_config(args)
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return args, run_dir


# --- the lock -----------------------------------------------------------------------------------------------
def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    run_dir = tmp_path / "run"
    with held_by_child(run_dir) as pid:
        with pytest.raises(RunInUse, match=rf"is in use by pid {pid} on {re.escape(socket.gethostname())} "):
            acquire(run_dir, "ssl-zoo train")
        assert holder(run_dir)["pid"] == str(pid)
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == pid
    assert holder(run_dir) is None  # SIGKILLed: the kernel dropped its lock
    lock = acquire(run_dir, "ssl-zoo train")
    try:
        assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(RunInUse):  # a second open of the file in the same process is refused too
            acquire(run_dir, "ssl-zoo eval")
    finally:
        lock.release()
    assert holder(run_dir) is None


def test_a_failed_start_removes_only_the_folders_it_made_and_eval_leaves_the_file_as_found(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    run_dir = tmp_path / "out" / "a" / "b"
    acquire(run_dir, "ssl-zoo train").release(remove_if_unused=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]

    lock = acquire(run_dir, "ssl-zoo train")
    (run_dir / "config.yaml").write_text("x")  # the run wrote something: its folder stays
    lock.release(remove_if_unused=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", LOCK_NAME]

    before = (run_dir / LOCK_NAME).read_bytes()
    acquire(run_dir, "ssl-zoo eval", create=False, leave_as_found=True).release()
    assert (run_dir / LOCK_NAME).read_bytes() == before
    (run_dir / LOCK_NAME).unlink()
    acquire(run_dir, "ssl-zoo eval", create=False, leave_as_found=True).release()
    assert not (run_dir / LOCK_NAME).exists()
    assert acquire(tmp_path / "missing", "ssl-zoo eval", create=False).fd is None  # eval reports it itself
    assert not (tmp_path / "missing").exists()


def test_a_directory_holding_only_a_lock_file_is_a_fresh_start(tmp_path):
    args, run_dir = _fabricated_run(tmp_path)
    cfg = load_config(args)
    (run_dir / "config.yaml").unlink()  # killed after taking the lock, before config.yaml
    (run_dir / LOCK_NAME).write_text('{"pid": 1}\n')
    assert check_existing(run_dir, cfg) is False
    (run_dir / "notes.txt").write_text("someone else's")
    with pytest.raises(UserError, match="not an ssl-zoo run directory"):
        check_existing(run_dir, cfg)


@pytest.mark.slow
def test_train_and_eval_of_a_held_run_are_refused_naming_the_holder_and_write_nothing(tmp_path, capsys,
                                                                                        monkeypatch):
    args, run_dir = _fabricated_run(tmp_path)
    fresh = [*args, "seed=7"]  # a run whose directory the holder created a moment ago
    fresh_dir = run_dir_for(load_config(fresh))
    writes = []
    real = atomic.write_temp
    monkeypatch.setattr(atomic, "write_temp", lambda path, write: writes.append(path) or real(path, write))
    with held_by_child(run_dir) as pid, held_by_child(fresh_dir) as fresh_pid:
        before = _tree(tmp_path)
        for argv, holder_pid in ((["train", *args], pid), (["train", *fresh], fresh_pid),
                                 (["eval", str(run_dir)], pid)):
            line = _one_line_error(capsys, argv)
            assert f"in use by pid {holder_pid} on {socket.gethostname()}" in line, line
            assert "wait for it to end or stop it" in line
            assert _tree(tmp_path) == before and writes == [], argv
        (row,) = _status_json(capsys, run_dir.parent)  # the fresh one has no config.yaml yet: not a run
        assert (row["state"], row["note"]) == ("running", f"pid {pid} on {socket.gethostname()}")


def test_a_single_run_another_process_is_training_is_refused_in_one_line(tmp_path, capsys):
    """(A sweep skips such a run and goes on: tests/test_sweep_local.py.)"""
    args, run_dir = _fabricated_run(tmp_path)
    with held_by_child(run_dir) as pid:
        before = _tree(tmp_path)
        line = _one_line_error(capsys, ["train", *args])
        assert _tree(tmp_path) == before
    assert f"in use by pid {pid}" in line


@pytest.mark.slow
def test_a_second_start_is_refused_and_a_sigkilled_run_restarts(tmp_path, capsys, monkeypatch):
    """Real `ssl-zoo train` processes. The same command while one trains (here, in this process) is refused in
    one line naming its pid and writes nothing; SIGKILLed, it leaves no lock behind and the same command
    resumes; a burst of SIGTERMs then stops that one with exit 3 (not 143) and a checkpoint where it says."""
    args = tiny_overrides(tmp_path, "device=cpu", "eval.enabled=false", "trainer.epochs=200", "trainer.log_every=1")
    run_dir = run_dir_for(load_config(args))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "import sys; from ssl_zoo.cli import main; sys.argv[0] = 'ssl-zoo'; "
               "sys.exit(main())", "train", *args]  # main() without arguments: as the `ssl-zoo` script runs
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writes = []
    real = atomic.write_temp
    monkeypatch.setattr(atomic, "write_temp", lambda path, write: writes.append(path) or real(path, write))
    try:
        assert "new run" in first.stdout.readline()
        assert first.stdout.readline().startswith("epoch 1/200"), first.stderr.read()  # a checkpoint exists
        line = _one_line_error(capsys, ["train", *args])
        assert f"in use by pid {first.pid} on {socket.gethostname()} (ssl-zoo train, since " in line, line
        assert _one_line_error(capsys, ["eval", str(run_dir)]).endswith(line.split(" is in use by ")[1])
        with pytest.raises(RunInUse, match=f"in use by pid {first.pid}"):  # the Python API holds the lock too
            api.evaluate(run_dir)
        assert writes == [] and not (run_dir / "results.json").exists()
    finally:
        first.kill()
        first.wait()
    assert holder(run_dir) is None
    again = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert re.match(r"run .*: resuming at step [1-9]\d*/4200", again.stdout.readline()), again.stderr.read()
        for _ in range(40):  # SIGTERMs until it has ended
            if again.poll() is not None:
                break
            again.send_signal(signal.SIGTERM)
            time.sleep(0.005)
        _, err = again.communicate(timeout=120)
    finally:
        again.kill()
        again.wait()
    assert again.returncode == 3, (again.returncode, err)
    (line,) = err.strip().splitlines()
    step = int(re.search(r"^ssl-zoo: stopped at step (\d+); checkpoint saved; run the same command again to "
                         r"resume$", line).group(1))
    assert find_checkpoint(run_dir)[0]["step"] == step


# --- nothing unpickled --------------------------------------------------------------------------------------
class _Payload:
    """Pickled code: unpickling it creates a folder."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _slurm_sweep(root: Path, tasks: list[dict]) -> Path:
    (root / "jobs").mkdir(parents=True)
    manifest = {"id": "4242", "launcher": "slurm", "submitted": "2026-01-01T00:00:00", "host": "login1", "pid": 9,
                "command": "", "skipped": [], "tasks": tasks}
    (root / "jobs" / "sweep-4242.json").write_text(json.dumps(manifest))
    return root


def _status_json(capsys, folder: Path) -> list[dict]:
    assert main(["status", str(folder), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_never_unpickles_a_result_file(tmp_path, capsys, monkeypatch):
    target = tmp_path / "pwned"
    assert pickle.loads(pickle.dumps(_Payload(target))) is None and target.exists()  # the payload is live
    target.rmdir()
    sweep = _slurm_sweep(tmp_path / "sweep", [{"index": 0, "job_id": "4242_0", "run_dir": "r0", "epochs": 3}])
    for name in ("4242_0_0_result.pkl", "4242_0_result.pkl", "4242_0_submitted.pkl"):
        (sweep / "jobs" / name).write_bytes(pickle.dumps(("error", _Payload(target))))
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})
    (task,) = _status_json(capsys, sweep)
    assert not target.exists()
    assert task["state"] == "stopped" and "never started or reported" in task["note"]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def test_no_code_path_unpickles_run_files():
    """Every load in the package is a safe one: torch.load with weights_only=True, np.load without
    allow_pickle; no pickle/marshal/shelve/dill/joblib load, no submitit result reader, no yaml.load."""
    unsafe = {"pickle.load", "pickle.loads", "pickle.Unpickler", "marshal.load", "marshal.loads", "shelve.open",
              "dill.load", "dill.loads", "joblib.load", "cloudpickle.load", "cloudpickle.loads", "pickle_load",
              "yaml.load", "yaml.unsafe_load", "yaml.full_load", "pd.read_pickle", "torch.jit.load"}
    offenders = []
    for folder in ("ssl_zoo", "methods", "analysis"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and any(f"{node.module}.{a.name}" in unsafe or a.name ==
                                                            "pickle_load" for a in node.names):
                    offenders.append(f"{path}:{node.lineno}: imports {[a.name for a in node.names]}")
            for func, call in _calls(tree):
                kwargs = {k.arg: ast.unparse(k.value) for k in call.keywords}
                if func == "torch.load" and kwargs.get("weights_only") != "True":
                    offenders.append(f"{path}:{call.lineno}: torch.load without weights_only=True")
                if func.endswith(("np.load", "numpy.load")) and kwargs.get("allow_pickle", "False") != "False":
                    offenders.append(f"{path}:{call.lineno}: np.load with allow_pickle")
                if func in unsafe:
                    offenders.append(f"{path}:{call.lineno}: {func}")
    assert not offenders, offenders


# --- status on odd folders ----------------------------------------------------------------------------------
@functools.lru_cache
def _config_yaml() -> str:
    return OmegaConf.to_yaml(load_config(tiny_overrides("runs", "trainer.epochs=3")))


def _run(root: Path, name: str, epochs_done: int = 1, results=None, metrics: bytes | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(_config_yaml())
    rows = "".join(f"{e},{10 * e},{2.0 / e}\n" for e in range(1, epochs_done + 1))
    (folder / "metrics.csv").write_bytes(metrics if metrics is not None else f"epoch,step,loss\n{rows}".encode())
    if results is not None:
        (folder / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    return folder


def test_status_of_odd_manifests_and_job_files_reports_what_it_can(tmp_path, capsys, monkeypatch):
    sweep = _slurm_sweep(tmp_path / "sweep", [
        {"index": 0, "job_id": "4242_0", "run_dir": "r0", "epochs": 3},
        {"index": 1, "job_id": "4242_1", "run_dir": "r1", "epochs": "three"},
        {"index": 2, "job_id": "4242_2", "run_dir": "r2", "epochs": 3},
        {"index": 3, "job_id": "4242_3", "run_dir": "r3", "epochs": 3},
        {"index": 4, "job_id": "../../etc/passwd", "run_dir": "r4"},  # malformed entries: skipped
        {"index": 5, "job_id": "4242_5", "run_dir": "/etc"},
        {"index": 6, "job_id": "4242_6", "run_dir": "../outside"},
        "not a task", None])
    _run(sweep, "r0", 2)
    _run(sweep, "r1", 3, {"status": "finished", "knn_top1": 80.5, "linear_top1": 90.25})
    _run(sweep, "r2", 1)
    jobs = sweep / "jobs"
    odd = {"sweep-empty.json": b"[]", "sweep-nokeys.json": b"{}", "sweep-text.json": b"not json",
           "sweep-binary.json": os.urandom(512), "sweep-deep.json": b"[" * 100_000,
           "sweep-badlauncher.json": b'{"launcher": "pbs", "tasks": []}',
           "sweep-tasks-dict.json": b'{"launcher": "slurm", "tasks": {"a": 1}}',
           "4242_0_state.json": json.dumps({"state": "failed", "error": "UserError: the data folder vanished"}).encode(),
           "4242_2_state.json": json.dumps({"state": "running", "host": "node7"}).encode(),
           "4242_3_state.json": b"\x00\x01binary", "4242_0_0_log.err": os.urandom(256),
           "README": b"anything", "4242_0_0_result.pkl": os.urandom(64)}
    for name, content in odd.items():
        (jobs / name).write_bytes(content)
    (jobs / "sweep-a-folder.json").mkdir()
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})
    assert main(["status", str(sweep), "--json"]) == 0
    captured = capsys.readouterr()
    rows = {r["run_dir"]: r for r in json.loads(captured.out)}
    assert set(rows) == {"r0", "r1", "r2", "r3"}
    assert (rows["r0"]["state"], rows["r0"]["note"]) == ("failed", "UserError: the data folder vanished")
    assert (rows["r0"]["epoch"], rows["r0"]["epochs"], rows["r0"]["loss"]) == (2, 3, 1.0)
    assert (rows["r1"]["state"], rows["r1"]["epochs"], rows["r1"]["linear_top1"]) == ("finished", None, 90.25)
    assert rows["r2"]["state"] == "stopped" and "killed while running on node7" in rows["r2"]["note"]
    assert rows["r3"]["state"] == "stopped"  # its state file is unreadable: named below
    skipped = captured.err.strip().splitlines()
    assert all(line.startswith("ssl-zoo: skipped ") for line in skipped)
    text = "\n".join(skipped)
    for name in ("sweep-empty.json: holds a list", "sweep-nokeys.json: no launcher", "sweep-text.json: not json",
                 "sweep-binary.json: not json", "sweep-deep.json: not json", "sweep-badlauncher.json: no launcher",
                 "sweep-tasks-dict.json: no task list", "sweep-a-folder.json: unreadable",
                 "sweep-4242.json: 5 of its 9 task entries are malformed", "4242_3_state.json: not json"):
        assert name in text, (name, text)
    assert main(["status", str(sweep)]) == 0  # the table too
    assert "4 run(s) in" in capsys.readouterr().out


def test_status_of_odd_run_files_never_crashes(tmp_path, capsys):
    root = tmp_path / "runs"
    _run(root, "list_results", results="[1, 2]")
    _run(root, "typed_wrong", 3, {"status": 5, "knn_top1": "90", "linear_top1": float("nan"), "error": ["x"]})
    _run(root, "bad_status", 3, {"status": "done", "knn_top1": 1e400})
    _run(root, "binary_metrics", metrics=os.urandom(2048))
    _run(root, "nul_metrics", metrics=b"epoch,step,loss\n1,\x00,2\n")
    _run(root, "nan_epoch", metrics=b"epoch,step,loss\nnan,1,inf\n")
    _run(root, "no_epoch_column", metrics=b"step,loss\n1,2\n2,3\n")
    _run(root, "nothing_yet", metrics=b"")
    (root / "config_garbage").mkdir()
    (root / "config_garbage" / "config.yaml").write_bytes(b"\xff\xfe: [unclosed")
    (root / "config_garbage" / "metrics.csv").write_text("epoch,step,loss\n1,2,3\n")
    (root / "a_file").write_text("not a run")
    rows = {r["run_dir"]: r for r in _status_json(capsys, root)}
    assert set(rows) == {"list_results", "typed_wrong", "bad_status", "binary_metrics", "nul_metrics", "nan_epoch",
                         "no_epoch_column", "nothing_yet", "config_garbage"}
    assert (rows["list_results"]["state"], rows["list_results"]["note"]) == (
        "unfinished", "no results.json and not running (the same command resumes it); results.json unreadable "
        "(not a json object)")
    wrong = rows["typed_wrong"]
    assert (wrong["state"], wrong["knn_top1"], wrong["linear_top1"], wrong["epoch"]) == ("unfinished", None, None, 3)
    assert "results.json status '5' unknown" in wrong["note"] and "knn_top1 is not a number" in wrong["note"]
    assert rows["bad_status"]["knn_top1"] is None and "status 'done' unknown" in rows["bad_status"]["note"]
    for name in ("binary_metrics", "nul_metrics"):
        assert (rows[name]["epoch"], rows[name]["loss"]) == (0, None) and "metrics.csv unreadable" in rows[name]["note"]
    assert (rows["nan_epoch"]["epoch"], rows["nan_epoch"]["loss"]) == (1, None)
    assert rows["no_epoch_column"]["epoch"] == 2 and "no readable epoch" in rows["no_epoch_column"]["note"]
    assert (rows["nothing_yet"]["state"], rows["nothing_yet"]["epoch"]) == ("unfinished", 0)
    assert (rows["config_garbage"]["epochs"], rows["config_garbage"]["epoch"]) == (None, 1)
    assert main(["status", str(root)]) == 0
    assert "9 run(s) in" in capsys.readouterr().out

    assert "is not a directory" in _one_line_error(capsys, ["status", str(root / "a_file")])
    assert "does not exist" in _one_line_error(capsys, ["status", str(root / "missing")])
    only_bad = tmp_path / "only_bad"
    (only_bad / "jobs").mkdir(parents=True)
    (only_bad / "jobs" / "sweep-x.json").write_text("[]")
    line = _one_line_error(capsys, ["status", str(only_bad)])
    assert "holds no runs" in line and "sweep-x.json: holds a list" in line


@pytest.mark.slow
def test_a_slurm_task_reports_its_state_in_json_that_status_reads(tmp_path, capsys, monkeypatch):
    """The task entry point (launch.TrainTask) writes jobs/<job id>_state.json: here it fails at once because
    another process holds its run, and status shows that error without reading any pickle."""
    from ssl_zoo.launch.launcher import TrainTask

    args, run_dir = _fabricated_run(tmp_path)
    sweep = run_dir.parent
    jobs = sweep / "jobs"
    jobs.mkdir()
    manifest = {"id": "77", "launcher": "slurm", "submitted": "2026-01-01T00:00:00",
                "tasks": [{"index": 0, "job_id": "77_0", "run_dir": run_dir.name, "epochs": 1}]}
    (jobs / "sweep-77.json").write_text(json.dumps(manifest))
    for key, value in {"SUBMITIT_EXECUTOR": "slurm", "SUBMITIT_FOLDER": str(jobs), "SLURM_JOB_ID": "78",
                       "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0", "SLURM_PROCID": "0",
                       "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                       "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": socket.gethostname()}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = OmegaConf.to_container(load_config(args), resolve=True)
    with held_by_child(run_dir) as pid:
        with pytest.raises(RunInUse):
            TrainTask(cfg)()
    state = json.loads((jobs / "77_0_state.json").read_text())
    assert state["state"] == "failed" and f"in use by pid {pid}" in state["error"]
    monkeypatch.setattr("ssl_zoo.launch.slurm_queue.squeue", lambda: {})
    (row,) = _status_json(capsys, sweep)
    assert row["state"] == "failed" and f"in use by pid {pid}" in row["note"]

    TrainTask(cfg)()  # the holder is gone: the same task (a retry) trains the run to its end
    capsys.readouterr()
    assert json.loads((jobs / "77_0_state.json").read_text())["state"] == "finished"
    (row,) = _status_json(capsys, sweep)
    assert (row["state"], row["epoch"], row["epochs"]) == ("finished", 1, 1)
