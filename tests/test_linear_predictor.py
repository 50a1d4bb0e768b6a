"""The linear predictor (Tian et al. 2021): the alignment numbers against values worked out by hand, DirectPred's
W_p against its formula, F-hat's running estimate, the predictor's own weight decay, the metrics.csv columns of a
run, and the identity of runs made before the predictor kinds existed."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.config.load import load_config
from ssl_zoo.launch.run import train
from ssl_zoo.models.heads import predictor_head
from ssl_zoo.models.linear_predictor import LinearPredictor, alignment_metrics, directpred_weight
from ssl_zoo.runs.identity import config_hash
from ssl_zoo.train.build import build_method
from ssl_zoo.train.optim import build_optimizer

from tiny import tiny_overrides


def _rotation(theta: float) -> torch.Tensor:
    """A rotation by theta in the plane of the first two axes of R^3."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_alignment_of_a_rotated_predictor_matches_the_hand_computed_value():
    # F = diag(3, 2, 1): its eigenvectors are the axes. W_p = R diag(a, b, c) R^T with R a rotation by theta in
    # the (e1, e2) plane. Then W e1 = (a cos^2 + b sin^2, (a - b) cos sin, 0), W e2 = ((a - b) cos sin,
    # a sin^2 + b cos^2, 0), W e3 = c e3.
    a, b, c, theta = 4.0, 1.0, 0.5, 0.3
    co, si = math.cos(theta), math.sin(theta)
    r = _rotation(theta)
    w = r @ torch.diag(torch.tensor([a, b, c], dtype=torch.float64)) @ r.T
    f = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    c1 = (a * co**2 + b * si**2) / math.hypot(a * co**2 + b * si**2, (a - b) * co * si)
    c2 = (a * si**2 + b * co**2) / math.hypot((a - b) * co * si, a * si**2 + b * co**2)
    expected = (c1 + c2 + 1.0) / 3
    out = alignment_metrics(f, w)
    assert out["alignment"] == pytest.approx(expected, abs=1e-12)
    # F W - W F: the only non-zero entries are the off-diagonal (1, 2) pair, (3 - 2) (a - b) cos sin each sign
    off = (a - b) * co * si
    comm = math.sqrt(2) * abs(off) / (math.sqrt(9 + 4 + 1) * math.sqrt(a**2 + b**2 + c**2))
    assert out["commutator"] == pytest.approx(comm, abs=1e-12)
    assert out["asymmetry"] == pytest.approx(0.0, abs=1e-12)
    assert [out["eig1"], out["eig2"], out["eig3"]] == pytest.approx([a, b, c])
    assert [out["input_eig1"], out["input_eig2"], out["input_eig3"]] == pytest.approx([3, 2, 1])


def test_aligned_predictors_read_one_and_a_misaligned_one_reads_less():
    f = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    assert alignment_metrics(f, torch.diag(torch.tensor([5.0, 0.1, 2.0])))["alignment"] == pytest.approx(1.0)
    assert alignment_metrics(f, torch.eye(3))["alignment"] == pytest.approx(1.0)  # the identity commutes with all
    rotated = _rotation(math.pi / 4) @ torch.diag(torch.tensor([4.0, 0.1, 1.0], dtype=torch.float64))
    assert alignment_metrics(f, rotated @ _rotation(math.pi / 4).T)["alignment"] < 0.85


def test_asymmetry_of_a_shear():
    w = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # W - W^T = [[0, 2], [-2, 0]]: norm sqrt(8); |W| = sqrt(6)
    assert alignment_metrics(torch.eye(2), w)["asymmetry"] == pytest.approx(math.sqrt(8 / 6))


def test_directions_f_does_not_use_do_not_count():
    # F's third eigenvalue is below USED_FRACTION of its first: W_p's misalignment there is not counted
    f = torch.diag(torch.tensor([3.0, 2.0, 1e-9]))
    w = torch.eye(3, dtype=torch.float64)
    w[2, 0] = w[0, 2] = 0.0
    w[2, 2] = 0.0
    w[2, 1] = w[1, 2] = 0.0
    assert alignment_metrics(f, w)["alignment"] == pytest.approx(1.0)
    w2 = w.clone()
    w2[0, 1] = w2[1, 0] = 1.0  # now e1 and e2 are mixed by W_s: counted
    assert alignment_metrics(f, w2)["alignment"] < 0.9


def test_directpred_weight_is_the_published_formula():
    q = _rotation(0.7)
    s = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    corr = q @ torch.diag(s) @ q.T
    eps = 0.01
    want = q @ torch.diag((s / 4.0).sqrt() + eps) @ q.T  # p_j = sqrt(s_j / max s) + eps
    assert torch.allclose(directpred_weight(corr, eps), want, atol=1e-12)


def test_f_hat_is_the_running_correlation_and_directpred_follows_it():
    torch.manual_seed(0)
    pred = LinearPredictor(4, "directpred", rho=0.3, eps=0.01, freq=2)
    assert torch.equal(pred.weight, torch.eye(4))  # before the first step
    batches = [torch.randn(8, 4, requires_grad=True) for _ in range(3)]
    want, weights = None, []
    for x in batches:
        pred(x[:5]), pred(x[5:])  # two views' calls in one step: one batch of 8 rows
        pred.after_step()
        batch = x.detach().T @ x.detach() / 8
        want = batch if want is None else 0.3 * want + 0.7 * batch
        assert torch.allclose(pred.corr, want, atol=1e-5)
        weights.append(pred.weight.clone())
    assert torch.equal(weights[1], weights[0])  # freq=2: steps 1 and 3 set W_p, step 2 leaves it
    assert torch.allclose(weights[2], directpred_weight(want, 0.01), atol=1e-5)
    assert not pred.weight.requires_grad


def test_only_training_steps_feed_f_hat():
    pred = LinearPredictor(3, "linear")
    x = torch.randn(4, 3)
    pred.eval()
    pred(x)
    pred.train()
    with torch.no_grad():
        pred(x)
    assert float(pred.batch_rows) == 0
    pred.after_step()
    assert int(pred.steps) == 0 and pred.epoch_logs() == {}


def test_trained_linear_predictor_gets_gradient_and_its_own_weight_decay():
    cfg = load_config(tiny_overrides("/tmp", "ablation=predictor_linear", "method.predictor.weight_decay_mult=10"))
    model = build_method(cfg)
    assert isinstance(model.predictor, LinearPredictor) and model.predictor.weight.requires_grad
    opt = build_optimizer(model.param_groups(), cfg.trainer)
    decays = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    wd = float(cfg.trainer.weight_decay)
    assert decays[id(model.predictor.weight)] == pytest.approx(10 * wd)
    encoder_weight = next(p for p in model.backbone.parameters() if p.ndim > 1)
    assert decays[id(encoder_weight)] == pytest.approx(wd)


def test_predictor_head_kinds():
    node = OmegaConf.create({"enabled": True, "layers": 2, "hidden_dim": 8, "out_dim": 6, "bn_hidden": True,
                             "bn_out": False, "affine": True, "bias": True, "trainable": True, "kind": "mlp",
                             "f_momentum": 0.3, "directpred_eps": 0.01, "directpred_freq": 1})
    assert isinstance(predictor_head(6, node), torch.nn.Sequential)
    node.kind = "directpred"
    head = predictor_head(6, node)
    assert isinstance(head, LinearPredictor) and head.kind == "directpred" and head.weight.shape == (6, 6)


def test_runs_made_before_the_predictor_kinds_keep_their_identity():
    cfg = load_config(["method=byol"])
    old = OmegaConf.create(OmegaConf.to_container(cfg))  # a plain copy, not in struct mode
    for key in ("kind", "f_momentum", "directpred_eps", "directpred_freq", "weight_decay_mult"):
        old.method.predictor.pop(key)
    assert config_hash(cfg) == config_hash(old)
    assert config_hash(load_config(["method=byol", "ablation=predictor_linear"])) != config_hash(cfg)


def test_a_bad_predictor_kind_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", "method=byol",
                           "method.predictor.kind=quadratic", f"out_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "method.predictor.kind" in lines[0], proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["predictor_linear", "predictor_directpred"])
def test_a_run_logs_the_alignment_every_epoch(tmp_path, ablation):
    run = train(load_config(tiny_overrides(tmp_path, f"ablation={ablation}", "eval.enabled=false")))
    metrics = pd.read_csv(run / "metrics.csv")
    assert len(metrics) == 2
    for col in ("predictor_alignment", "predictor_commutator", "predictor_asymmetry", "predictor_eig1",
                "predictor_input_eig1"):
        assert metrics[col].notna().all(), col
    assert ((metrics["predictor_alignment"] >= 0) & (metrics["predictor_alignment"] <= 1 + 1e-9)).all()
    if ablation == "predictor_directpred":  # W_p is built from F-hat's eigenvectors: aligned, symmetric
        assert metrics["predictor_alignment"].min() == pytest.approx(1.0, abs=1e-6)
        assert metrics["predictor_asymmetry"].max() == pytest.approx(0.0, abs=1e-6)
