"""Ablations: each shipped yaml composes with, builds and trains one step on every method it applies to and does
what its name says; applying one where it has no meaning is a one-line error (exit 2) before anything is written;
the collapse study expands into its grid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import conf_dir
from ssl_zoo.config import ablations
from ssl_zoo.config.load import load_config
from ssl_zoo.data.views import build_view_maker
from ssl_zoo.models.linear_predictor import LinearPredictor
from ssl_zoo.runs.identity import run_dir_for
from ssl_zoo.train.build import build_method
from ssl_zoo.train.trainer import step_generator

ABLATIONS = sorted(p.stem for p in (conf_dir() / "ablation").glob("*.yaml"))
METHODS = sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))
ISSUE_ABLATIONS = {"none", "no_predictor", "predictor_fixed_random", "predictor_lr_x10", "no_bn_heads",
                   "no_bn_projector", "no_bn_predictor", "bn_predictor_output", "no_stopgrad", "tau_zero", "tau_one",
                   "tau_constant", "no_centering", "no_sharpening", "center_momentum_0999"}

# The applicability the papers imply, stated independently of the rule that derives it from the yaml keys.
MUST_APPLY = {"no_predictor": {"byol", "simsiam"}, "predictor_fixed_random": {"byol", "simsiam"},
              "no_bn_heads": {"byol", "simsiam"}, "bn_predictor_output": {"byol", "simsiam"},
              "no_stopgrad": {"simsiam"}, "tau_zero": {"byol", "mocov2", "dino"}, "tau_one": {"byol"},
              "tau_constant": {"byol"}, "no_centering": {"dino"}, "no_sharpening": {"dino"},
              "center_momentum_0999": {"dino"}, "no_variance": {"vicreg"}, "no_covariance": {"vicreg"},
              "no_redundancy": {"barlow"}, "no_sinkhorn": {"swav"}, "no_queue": {"swav"},
              "no_bn_projector": {"barlow", "vicreg"}, "predictor_linear": {"byol", "simsiam"},
              "predictor_directpred": {"byol", "simsiam"}, "predictor_wd_x10": {"byol", "simsiam"},
              "no_weight_decay": {"byol", "simsiam", "dino", "mocov2"}}
MUST_NOT_APPLY = {"no_predictor": {"dino", "mocov2", "simclr", "barlow"}, "no_stopgrad": {"byol", "dino", "mocov2"},
                  "no_centering": {"byol", "simsiam", "mocov2"}, "no_sharpening": {"byol", "simsiam"},
                  "tau_zero": {"simsiam", "simclr", "barlow"}, "bn_predictor_output": {"dino", "mocov2"},
                  "no_variance": {"barlow", "byol"}, "no_redundancy": {"vicreg", "simclr"},
                  "no_queue": {"mocov2"}, "no_sinkhorn": {"dino"}, "predictor_linear": {"dino", "mocov2"},
                  "predictor_directpred": {"dino", "simclr"}}

TINY = ["data=digits", "encoder=small_cnn", "encoder.width=4", "progress_bar=false"]
SMALL_HEADS = {"byol": ["method.projector.hidden_dim=32", "method.predictor.hidden_dim=32"],
               "simsiam": ["method.projector.hidden_dim=32", "method.predictor.hidden_dim=16"],
               "dino": ["method.head.hidden_dim=32", "method.head.num_prototypes=64"]}


def _applicable(ablation: str) -> list[str]:
    return ablations.applicable_methods(conf_dir() / "ablation" / f"{ablation}.yaml")


APPLICABLE = {a: _applicable(a) for a in ABLATIONS}
STUDY_METHODS = ("byol", "simsiam", "dino", "mocov2")  # built and stepped; the other methods are composed only
PAIRS = [(a, m) for a in ABLATIONS for m in APPLICABLE[a] if m in STUDY_METHODS]


def test_every_ablation_of_the_issue_ships():
    assert ISSUE_ABLATIONS <= set(ABLATIONS)


@pytest.mark.parametrize("ablation", sorted(MUST_APPLY))
def test_applicability_matches_the_papers(ablation):
    applies = set(APPLICABLE[ablation])
    assert MUST_APPLY[ablation] <= applies
    assert not MUST_NOT_APPLY.get(ablation, set()) & applies


def test_ablations_compose_with_the_other_methods_they_apply_to():
    for ablation, methods in APPLICABLE.items():
        for method in set(methods) - set(STUDY_METHODS):
            cfg = load_config([f"method={method}", f"ablation={ablation}"])
            assert cfg.ablation.name == ablation and cfg.method.name == method


@pytest.mark.parametrize("ablation, method", PAIRS)
def test_ablation_composes_builds_and_trains_one_step(ablation, method):
    cfg = load_config([f"method={method}", f"ablation={ablation}", *TINY, *SMALL_HEADS.get(method, []),
                       "trainer.batch_size=16"])
    assert cfg.ablation.name == ablation
    model = build_method(cfg)
    views = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))(
        torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8), step_generator(torch.device("cpu"), 0, 0))
    out = model.training_step(views, 0.5)
    out.loss.backward()
    model.after_step(0.5)
    assert torch.isfinite(out.loss)
    _check_semantics(ablation, cfg, model)


def _bns(module: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm1d) for m in module.modules())


def _check_semantics(ablation: str, cfg, model) -> None:
    """What each ablation's name promises, on the built model."""
    m = cfg.method
    if ablation == "no_predictor":
        assert isinstance(model.predictor, nn.Identity)
    elif ablation == "predictor_fixed_random":
        assert not any(p.requires_grad for p in model.predictor.parameters())
        trained = {id(p) for g in model.param_groups() for p in g["params"]}
        assert not trained & {id(p) for p in model.predictor.parameters()}
    elif ablation == "predictor_lr_x10":
        assert any(g.get("lr_mult") == 10.0 for g in model.param_groups())
    elif ablation in ("no_bn_heads", "no_bn_projector", "no_bn_predictor"):
        heads = {"no_bn_heads": ["projector", "predictor"], "no_bn_projector": ["projector"],
                 "no_bn_predictor": ["predictor"]}[ablation]
        assert all(_bns(getattr(model, h)) == 0 for h in heads)
    elif ablation == "bn_predictor_output":
        assert isinstance(list(model.predictor.modules())[-1], nn.BatchNorm1d)
    elif ablation == "no_stopgrad":
        assert m.stop_gradient is False
    elif ablation in ("tau_zero", "tau_one", "tau_constant"):
        want = {"tau_zero": 0.0, "tau_one": 1.0, "tau_constant": float(m.tau_base)}[ablation]
        assert model.tau(0.0) == model.tau(0.7) == want
    elif ablation == "no_centering":
        assert m.centering is False
    elif ablation == "no_sharpening":
        assert m.teacher_temp == m.warmup_teacher_temp == m.student_temp
    elif ablation == "center_momentum_0999":
        assert m.center_momentum == 0.999
    elif ablation in ("predictor_linear", "predictor_directpred", "predictor_linear_no_wd", "predictor_linear_lr_x10"):
        assert isinstance(model.predictor, LinearPredictor)
        d = int(m.projector.out_dim)
        assert model.predictor.weight.shape == (d, d)
        assert model.predictor.weight.requires_grad == (ablation != "predictor_directpred")
        assert int(model.predictor.steps) == 1  # after_step folded the step's inputs into F-hat
        if ablation == "predictor_linear_no_wd":
            assert cfg.trainer.weight_decay == 0.0
        if ablation == "predictor_linear_lr_x10":
            assert any(g.get("lr_mult") == 10.0 for g in model.param_groups())
    elif ablation == "no_weight_decay":
        assert cfg.trainer.weight_decay == 0.0
    elif ablation == "predictor_wd_x10":
        assert [g.get("weight_decay_mult") for g in model.param_groups()][1:] == [10.0]


def test_no_stopgrad_lets_gradient_reach_the_target_branch():
    """The one behavioural difference of no_stopgrad: the loss depends on z through both branches."""
    grads = {}
    for ablation in ("none", "no_stopgrad"):
        cfg = load_config(["method=simsiam", f"ablation={ablation}", *TINY, *SMALL_HEADS["simsiam"]])
        torch.manual_seed(0)
        model = build_method(cfg)
        x = torch.randn(8, 1, 16, 16)
        model.training_step([x, x.flip(-1)], 0.0).loss.backward()
        grads[ablation] = torch.cat([p.grad.flatten() for p in model.projector.parameters()])
    assert not torch.allclose(grads["none"], grads["no_stopgrad"])


def test_non_applicable_ablation_is_a_one_line_error_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="ablation 'no_predictor' does not apply to method 'dino'"):
        load_config(["method=dino", "ablation=no_predictor"])
    out = subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "train", "method=dino", "ablation=no_predictor",
                          f"out_dir={tmp_path / 'runs'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-zoo: error: ablation 'no_predictor' does not apply")
    assert "it applies to: byol" in lines[0]
    assert not (tmp_path / "runs").exists()


def _fake_conf(tmp_path: Path, ablation_yaml: str) -> Path:
    """A conf dir with the shipped methods and top-level config plus one user-written ablation."""
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir() / "method", conf / "method")
    shutil.copy(conf_dir() / "config.yaml", conf / "config.yaml")
    (conf / "ablation").mkdir()
    (conf / "ablation" / "mine.yaml").write_text(ablation_yaml)
    return conf


def test_user_written_ablation_applicability_is_derived_from_its_keys(tmp_path, monkeypatch):
    conf = _fake_conf(tmp_path, "# @package _global_\nablation: {name: mine}\n"
                                "method:\n  predictor: {lr_mult: 3.0}\ntrainer: {weight_decay: 0.0}\n")
    monkeypatch.setattr(ablations, "_conf_dir", lambda: conf)
    path = conf / "ablation" / "mine.yaml"
    assert ablations.ablation_keys(path) == ["method.predictor.lr_mult", "trainer.weight_decay"]
    assert set(ablations.applicable_methods(path)) == {"byol", "simsiam", "mocov3"}
    assert ablations.missing_keys(path, conf / "method" / "dino.yaml") == ["method.predictor.lr_mult"]
    cfg = OmegaConf.create({"method": {"name": "dino"}, "ablation": {"name": "mine"}})
    with pytest.raises(UserError, match=r"\(dino has no method.predictor.lr_mult\); it applies to: byol, mocov3"):
        ablations.check_ablation(cfg)
    path.write_text("# @package _global_\nablation: {name: mine}\ntrainer: {bogus_key: 1}\n")
    assert ablations.missing_keys(path, conf / "method" / "byol.yaml") == ["trainer.bogus_key"]


def test_ablation_methods_list_restricts_further(tmp_path, monkeypatch):
    conf = _fake_conf(tmp_path, "# @package _global_\nablation: {name: mine, methods: [byol]}\n"
                                "method:\n  tau_base: 0.5\n")
    monkeypatch.setattr(ablations, "_conf_dir", lambda: conf)
    assert ablations.applicable_methods(conf / "ablation" / "mine.yaml") == ["byol"]
    cfg = OmegaConf.create({"method": {"name": "mocov2"}, "ablation": {"name": "mine", "methods": ["byol"]}})
    with pytest.raises(UserError, match="does not apply to method 'mocov2'; it applies to: byol"):
        ablations.check_ablation(cfg)


def test_collapse_study_expands_into_its_grid():
    from ssl_zoo.launch.study import expand_studies

    jobs, expanded = expand_studies([["experiment=collapse_study"]])
    assert expanded
    cells = []
    for job in jobs:
        cfg = load_config(job)
        assert cfg.data.name == "fashion_mnist" and "grid" not in cfg.study
        cells.append((str(cfg.method.name), str(cfg.ablation.name), float(cfg.method.get("tau_base", -1))))
    assert {(m, a) for m, a, _ in cells} == {
        *(("simsiam", a) for a in ("none", "no_stopgrad", "no_predictor", "predictor_fixed_random", "no_bn_heads",
                                   "bn_predictor_output")),
        *(("byol", a) for a in ("none", "no_predictor", "tau_zero", "tau_one", "tau_constant", "no_bn_heads")),
        ("dino", "none"), ("dino", "no_centering"), ("dino", "no_sharpening"), ("mocov2", "none"),
        ("mocov2", "tau_zero"), ("vicreg", "none"), ("vicreg", "no_variance"), ("vicreg", "no_covariance"),
        ("swav", "none"), ("swav", "no_sinkhorn"), ("swav", "no_queue"), ("barlow", "none"),
        ("barlow", "no_redundancy"), ("barlow", "no_bn_projector")}
    assert ("mocov2", "tau_zero", 0.0) in cells  # MoCo v2 with momentum 0
    # a per-method budget setting never undoes the cell's ablation (SwAV's queue_length vs no_queue)
    queues = {str(load_config(j).ablation.name): int(load_config(j).method.queue_length)
              for j in jobs if "method=swav" in j}
    assert queues["no_queue"] == 0 and queues["none"] > 0
    # one cell picked by hand is the grid's cell: same config, same run directory
    one, expanded = expand_studies([["experiment=collapse_study", "method=byol", "ablation=tau_zero"]])
    assert not expanded and len(one) == 1
    cell = next(j for j in jobs if "method=byol" in j and "ablation=tau_zero" in j)
    assert run_dir_for(load_config(one[0])) == run_dir_for(load_config(cell))
    assert expand_studies([["method=byol"]]) == ([["method=byol"]], False)
