"""Offline evaluation: the probes on synthetic features, the feature cache, the online backbone only, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import load_data
from ssl_zoo.evaluation.probes import knn_key, knn_sweep, linear_probe
from ssl_zoo.launch.run import train
from ssl_zoo.launch.run_eval import evaluate_run_dir, evaluate_trained
from ssl_zoo.runs.checkpoint import load_checkpoint
from ssl_zoo.runs.config_file import write_config
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.train.build import build_method, build_trainer

from tiny import TINY, tiny_overrides


def _teacher_labels(n: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, classes, generator=torch.Generator().manual_seed(123))
    x = torch.randn(n, d, generator=g) * 3 + 1  # off-centre and scaled: the probe standardises
    return x, (x @ w).argmax(1), g


def test_linear_probe_separates_linearly_separable_classes():
    x, y, _ = _teacher_labels(3000, 16, 5, seed=0)
    out = linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], 5)
    assert out["top1"] >= 95.0  # labels are an argmax of a linear map: separable by construction
    assert out["top5"] == 100.0  # 5 classes
    assert out["n_val"] == 200 and out["n_train"] == 2000 and len(out["sweep"]) >= 4
    assert out["val_top1"] == out["sweep"][f"{out['wd']:g}"]


def test_linear_probe_matches_sklearn_under_label_noise():
    """20% of train labels replaced by another class: the probe recovers the clean rule as well as sklearn's
    logistic regression does (an independent implementation of the same estimator)."""
    from sklearn.linear_model import LogisticRegression

    x, y, g = _teacher_labels(6000, 16, 5, seed=1)
    flip = torch.rand(len(y), generator=g) < 0.2
    noisy = torch.where(flip, (y + torch.randint(1, 5, y.shape, generator=g)) % 5, y)
    acc = linear_probe(x[:4000], noisy[:4000], x[4000:], y[4000:], 5)["top1"]
    ref = LogisticRegression(max_iter=2000).fit(x[:4000].numpy(), noisy[:4000].numpy())
    expected = 100.0 * (ref.predict(x[4000:].numpy()) == y[4000:].numpy()).mean()
    assert expected > 85 and abs(acc - expected) < 1.5, (acc, expected)


def test_knn_on_one_hot_label_features_is_perfect():
    y_train, y_test = torch.arange(300) % 6, torch.arange(90) % 6
    sweep = knn_sweep(F.one_hot(y_train, 6).float(), y_train, F.one_hot(y_test, 6).float(), y_test, 6)
    assert set(sweep) == {knn_key(k, t) for k in (10, 20, 100, 200) for t in (0.05, 0.07, 0.1, 0.2)}
    assert all(v == 100.0 for v in sweep.values())


def test_knn_matches_a_direct_weighted_vote():
    g = torch.Generator().manual_seed(0)
    tr, te = torch.randn(120, 8, generator=g), torch.randn(50, 8, generator=g)
    ytr, yte = torch.randint(0, 4, (120,), generator=g), torch.randint(0, 4, (50,), generator=g)
    got = knn_sweep(tr, ytr, te, yte, 4, ks=(7, 30), ts=(0.1, 0.5), chunk=16)
    sims = F.normalize(te, dim=1) @ F.normalize(tr, dim=1).T
    for k in (7, 30):
        for t in (0.1, 0.5):
            correct = 0
            for i in range(len(te)):
                top = sims[i].argsort(descending=True)[:k]
                votes = [sum(float(torch.exp(sims[i, j] / t)) for j in top if ytr[j] == c) for c in range(4)]
                correct += int(max(range(4), key=votes.__getitem__) == yte[i])
            assert got[knn_key(k, t)] == pytest.approx(100.0 * correct / len(te))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny BYOL run (1 epoch), evaluated at the end of training; copied by tests that change it."""
    cfg = load_config(tiny_overrides(tmp_path_factory.mktemp("runs"), "trainer.epochs=1"))
    return train(cfg)


def _copy(run_dir, tmp_path):
    dst = tmp_path / run_dir.name
    shutil.copytree(run_dir, dst)
    return dst


def _numbers(r: dict) -> tuple:
    return (r["knn_top1"], r["linear_top1"], r["linear_top5"], r["knn_sweep"], r["projector"]["knn_top1"],
            r["projector"]["linear_top1"])


def test_train_writes_the_evaluation(finished_run):
    r = json.loads((finished_run / "results.json").read_text())
    assert r["status"] == "finished" and "random_init" not in r  # the tiny config turns it off
    assert set(r["knn_sweep"]) >= {knn_key(k, 0.1) for k in (10, 20, 100, 200)}
    assert r["knn_top1"] == r["knn_sweep"][knn_key(r["knn_k"], r["knn_t"])]
    assert r["projector"]["dim"] == 32 and r["dim"] == 8 * 4  # small_cnn width 8 -> 32 features
    assert 0 <= r["online_probe_acc"] <= 100
    cached = list((finished_run / "features").glob("backbone-*.pt"))
    assert len(cached) == 1
    feats = torch.load(cached[0], weights_only=True)
    assert feats["train"].shape == (1347, 32) and feats["test"].shape == (450, 32)


def test_eval_reads_the_cache_and_a_changed_checkpoint_invalidates_it(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    before = json.loads((run_dir / "results.json").read_text())
    again = evaluate_run_dir(run_dir)
    assert again["time"]["features_cached"] and _numbers(again) == _numbers(before)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    key = next(k for k in state["method"] if k.startswith("backbone.") and k.endswith("weight"))
    state["method"][key] = state["method"][key] * 1.5
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    changed = evaluate_run_dir(run_dir)
    assert not changed["time"]["features_cached"]
    assert len(list((run_dir / "features").glob("backbone-*.pt"))) == 1  # the stale file was replaced
    assert _numbers(changed) != _numbers(before)


def test_eval_ignores_the_momentum_target_weights(finished_run, tmp_path):
    run_dir = _copy(finished_run, tmp_path)
    before = json.loads((run_dir / "results.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    target = [k for k in state["method"] if k.startswith("target.") and state["method"][k].is_floating_point()]
    assert target
    for k in target:  # the EMA copy becomes noise
        state["method"][k] = torch.randn_like(state["method"][k]) * 10
    torch.save(state, run_dir / "checkpoints" / "last.pt")
    shutil.rmtree(run_dir / "features")  # recompute everything from the perturbed checkpoint
    after = evaluate_run_dir(run_dir)
    assert not after["time"]["features_cached"]
    assert _numbers(after) == _numbers(before)


class _Forbidden(RuntimeError):
    pass


def _forbid(module):
    def hook(*_):
        raise _Forbidden(type(module).__name__)
    return module.register_forward_pre_hook(hook)


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_eval_never_calls_the_target_or_teacher(method, tmp_path):
    extra = (["method.head.hidden_dim=64", "method.head.out_dim=16", "method.head.num_prototypes=32"]
             if method == "dino" else ["method.projector.hidden_dim=64", "method.projector.out_dim=32",
                                       "method.predictor.hidden_dim=64", "method.predictor.out_dim=32"])
    tiny = [o for o in TINY if not o.startswith("method.")]
    cfg = load_config([f"method={method}", *tiny, *extra, f"out_dir={tmp_path}"])
    m = build_method(cfg)
    copy = m.target if method == "byol" else m.teacher
    _forbid(copy)
    before = {k: v.clone() for k, v in copy.state_dict().items()}
    out = evaluate_trained(m, load_data(cfg.data), cfg, torch.device("cpu"), None, [])
    assert "projector" in out and 0 <= out["knn_top1"] <= 100
    assert all(torch.equal(before[k], v) for k, v in copy.state_dict().items())


def test_projector_probe_can_be_left_out(tmp_path):
    cfg = load_config([*TINY, f"out_dir={tmp_path}", "eval.projector=false", "eval.random_init=false"])
    out = evaluate_trained(build_method(cfg), load_data(cfg.data), cfg, torch.device("cpu"), None, [])
    assert "projector" not in out and 0 <= out["linear_top1"] <= 100


def test_eval_of_an_unfinished_run_says_so(tmp_path, capsys):
    cfg = load_config(tiny_overrides(tmp_path, "trainer.epochs=2"))
    run_dir = run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    write_config(run_dir, cfg)
    trainer = build_trainer(cfg, load_data(cfg.data), run_dir)
    trainer._run_epoch(0)  # what fit() does for the first of two epochs, then a checkpoint
    trainer._end_epoch(0)
    trainer.checkpoint()
    assert main(["eval", f"run_dir={run_dir}"]) == 0
    out = capsys.readouterr().out
    assert "unfinished" in out and "epoch 1 of 2" in out and "kNN top-1" in out
    r = json.loads((run_dir / "results.json").read_text())
    assert r["status"] == "unfinished" and r["evaluated_step"] == load_checkpoint(run_dir)["step"]
    assert r["epochs_done"] == 1 and "knn_top1" in r
    assert r["collapsed"] in (True, False) and "z_std" in r and "collapse_reason" in r
    # the unfinished run still resumes and finishes
    assert json.loads((train(cfg) / "results.json").read_text())["status"] == "finished"


def test_eval_cli_on_a_finished_run_and_bad_dirs(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "eval", f"run_dir={run_dir}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for text in ("finished", "trained", "trained (projector out)", "online probe", "k=200", "linear (L-BFGS) top-1"):
        assert text in out.stdout
    empty = tmp_path / "empty_run"
    shutil.copytree(run_dir, empty, ignore=shutil.ignore_patterns("checkpoints", "results.json"))
    for args in ([f"run_dir={tmp_path / 'nope'}"], [f"run_dir={tmp_path}"], [], [f"run_dir={empty}"],
                 [f"run_dir={run_dir}", "trainer.lr=1"], [f"run_dir={run_dir}", "eval.knn_k=many"]):
        capsys.readouterr()
        assert main(["eval", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("ssl-zoo: error:") and len(err.strip().splitlines()) == 1, (args, err)
        assert ("no checkpoint" in err) == (args == [f"run_dir={empty}"]), err


def test_online_probe_ignores_unlabelled_images(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.epochs=1")
    trainer = build_trainer(cfg, load_data(cfg.data), tmp_path / "run")
    feats = torch.randn(16, trainer.method.feat_dim)
    correct, labelled = trainer.probe.step(feats, torch.full((16,), -1))  # an all-unlabelled batch (STL-10)
    assert labelled.item() == 0 and correct.item() == 0
    assert all(torch.isfinite(p).all() for p in trainer.probe.parameters())
    y = torch.tensor([0, 1, -1, -1] * 4)
    correct, labelled = trainer.probe.step(feats, y)
    assert labelled.item() == 8 and 0 <= correct.item() <= 8
