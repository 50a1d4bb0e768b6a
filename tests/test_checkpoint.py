"""Checkpoint files: atomic replacement, a crash at every point of a save, corrupt files, no pickled code."""

from __future__ import annotations

import errno
import os
import pickle

import pytest
import torch

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import load_data
from ssl_zoo.runs import atomic, checkpoint
from ssl_zoo.runs.atomic import atomic_write_text
from ssl_zoo.runs.checkpoint import find_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from ssl_zoo.runs.config_file import write_config
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.runs.metrics_file import write_metrics
from ssl_zoo.runs.rundir import check_existing
from ssl_zoo.train.build import build_trainer
from ssl_zoo.train.trainer import Diverged

from tiny import tiny_overrides


def _state(step: int) -> dict:
    return {"method": {"w": torch.full((4096,), float(step))}, "optimizer": {}, "step": step, "rows": []}


def _steps(run_dir) -> dict[str, int]:
    folder = run_dir / "checkpoints"
    return {p.name: read_checkpoint(p)["step"] for p in sorted(folder.glob("*.pt"))}


def test_saves_rotate_last_into_prev_and_leave_no_temp_files(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, _state(step))
    assert _steps(tmp_path) == {"last.pt": 3, "prev.pt": 2}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "prev.pt"]
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two" and not list(tmp_path.glob(".*.tmp"))


class _Crash(Exception):
    pass


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_crash_at_any_point_of_a_save_leaves_a_whole_checkpoint(tmp_path, monkeypatch, hard_links):
    """Crash (raise) at the k-th file-system call of save_checkpoint, for every k: the newest whole checkpoint
    is always the old or the new one, never missing or broken; the next save repairs everything."""
    real = {"replace": os.replace, "link": os.link, "fsync": os.fsync}
    if not hard_links:  # a file system without hard links takes save_checkpoint's rename path
        real["link"] = lambda *a: (_ for _ in ()).throw(OSError("no hard links"))
    crashes = 0
    for k in range(12):
        run_dir = tmp_path / f"k{k}"
        save_checkpoint(run_dir, _state(1))
        save_checkpoint(run_dir, _state(2))
        calls = [0]

        def counted(name, *args, _k=k, _calls=calls):
            _calls[0] += 1
            if _calls[0] > _k:
                raise _Crash
            return real[name](*args)

        for name in real:
            monkeypatch.setattr(checkpoint.os, name, lambda *a, _n=name: counted(_n, *a))
        try:
            save_checkpoint(run_dir, _state(3))
        except _Crash:
            crashes += 1
        monkeypatch.undo()
        state = load_checkpoint(run_dir)
        assert state is not None and state["step"] in (2, 3), k
        save_checkpoint(run_dir, _state(4))
        assert _steps(run_dir)["last.pt"] == 4 and _steps(run_dir)["prev.pt"] in (2, 3)
    assert crashes >= 4  # the crash points really fell inside the save


def _corrupt(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flipped":  # a flipped byte inside the tensor data: only the zip CRC tells
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "not_a_checkpoint":
        torch.save([1, 2, 3], path)


@pytest.mark.parametrize("how", ["truncated", "flipped", "empty", "not_a_checkpoint"])
def test_a_bad_last_checkpoint_falls_back_to_prev_with_one_warning(tmp_path, capsys, how):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    _corrupt(tmp_path / "checkpoints" / "last.pt", how)
    state, path = find_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "prev.pt"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "warning" in err and "prev.pt (step 1)" in err


def test_both_checkpoints_bad_is_a_user_error_that_says_what_to_do(tmp_path):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    _corrupt(tmp_path / "checkpoints" / "last.pt", "truncated")
    _corrupt(tmp_path / "checkpoints" / "prev.pt", "flipped")
    with pytest.raises(UserError, match="no readable checkpoint.*last.pt.*prev.pt.*delete that folder"):
        find_checkpoint(tmp_path)


def test_a_missing_last_with_a_prev_loads_the_prev(tmp_path):
    """What a kill leaves on a file system without hard links, between the two renames."""
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    (tmp_path / "checkpoints" / "last.pt").unlink()
    assert load_checkpoint(tmp_path)["step"] == 1


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickled_code_in_a_checkpoint_never_runs(tmp_path):
    payload = _Payload()
    payload.target = str(tmp_path / "pwned")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({**_state(1), "extra": payload}, folder / "last.pt")
    with pytest.raises(UserError, match="no readable checkpoint"):
        load_checkpoint(tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert pickle.loads(pickle.dumps(payload)) is None and (tmp_path / "pwned").exists()  # the payload is live


def test_keep_previous_false_leaves_prev_alone(tmp_path):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    _corrupt(tmp_path / "checkpoints" / "last.pt", "truncated")
    save_checkpoint(tmp_path, _state(3), keep_previous=False)
    assert _steps(tmp_path) == {"last.pt": 3, "prev.pt": 1}


def test_write_metrics_of_no_rows_removes_a_stale_file(tmp_path):
    write_metrics(tmp_path, [{"epoch": 1, "loss": 0.5}])
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,loss")
    write_metrics(tmp_path, [])
    assert not (tmp_path / "metrics.csv").exists()


def test_a_run_dir_holding_only_temp_leftovers_starts_fresh(tmp_path):
    cfg = load_config(tiny_overrides(tmp_path))
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    (run_dir / ".config.yaml.tmp").write_text("half")  # killed while writing config.yaml
    assert check_existing(run_dir, cfg) is False
    write_config(run_dir, cfg)
    assert check_existing(run_dir, cfg) is True


def test_trainer_never_saves_non_finite_weights_and_resumes_after_a_fallback(tmp_path, capsys):
    cfg = load_config(tiny_overrides(tmp_path, "trainer.epochs=1"))
    run_dir = run_dir_for(cfg)
    trainer = build_trainer(cfg, load_data(cfg.data), run_dir)
    trainer.checkpoint()
    trainer.step = 5
    trainer.checkpoint()
    good = (run_dir / "checkpoints" / "last.pt").read_bytes()
    with torch.no_grad():
        next(trainer.method.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(Diverged, match="not finite at step 5"):
        trainer.checkpoint()
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == good

    _corrupt(run_dir / "checkpoints" / "last.pt", "truncated")
    again = build_trainer(cfg, load_data(cfg.data), run_dir)
    assert again.restore() and again.step == 0  # from prev.pt
    assert "resuming from prev.pt (step 0)" in capsys.readouterr().err
    again.step = 7
    again.checkpoint()  # replaces the bad last.pt, keeps the good prev.pt
    assert _steps(run_dir) == {"last.pt": 7, "prev.pt": 0}


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    atomic_write_text(tmp_path / "metrics.csv", "old")

    def disk_full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match="No space left on device.*previous file is kept"):
        atomic.write_temp(tmp_path / "metrics.csv", disk_full)
    assert (tmp_path / "metrics.csv").read_text() == "old" and not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("setting,deterministic,expected", [("auto", False, True), ("false", False, False),
                                                              ("auto", True, False), ("true", True, True)])
def test_conv_encoders_train_channels_last_on_the_cpu_too(tmp_path, setting, deterministic, expected):
    """auto: the faster convolution layout for convolutions on a CPU too, but not for deterministic=true runs
    (oneDNN's channels_last batch norm gives other bits on another core count)."""
    cfg = load_config(tiny_overrides(tmp_path, f"trainer.channels_last={setting}", f"deterministic={deterministic}"))
    trainer = build_trainer(cfg, load_data(cfg.data), run_dir_for(cfg))
    conv = [m for m in trainer.method.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # C > 1: layouts differ
    assert trainer.channels_last is expected
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected
    assert conv.weight.is_contiguous() is not expected
