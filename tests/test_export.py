"""`ssl-zoo export`: the online backbone loads into a freshly created torchvision / timm model, key for key,
with identical features; user mistakes are one line, exit code 2, nothing written."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from ssl_zoo.cli import main
from ssl_zoo.config.load import load_config
from ssl_zoo.data.views import plain_view
from ssl_zoo.export import export_run, load_exported
from ssl_zoo.launch.run import train
from ssl_zoo.runs.checkpoint import load_checkpoint

from tiny import tiny_overrides

pytestmark = pytest.mark.slow


def _tiny_run(tmp_path, *extra: str):
    """Two BYOL steps on 64 digits, no probes: enough for the online and target weights to differ."""
    return train(load_config(tiny_overrides(tmp_path / "runs", "trainer.epochs=1", "trainer.batch_size=32",
                                            "data.train_subset=64", "monitor.num_images=32", "eval.enabled=false",
                                            *extra)))


def _features(net: nn.Module, run_dir) -> torch.Tensor:
    from ssl_zoo.data.datasets import load_digits_data

    x = plain_view(load_digits_data().test_x[:16], 16, [0.305], [0.376])
    with torch.no_grad():
        return net.eval()(x)


def _trained_backbone(run_dir) -> tuple[nn.Module, dict]:
    from ssl_zoo.launch.run_eval import load_run_config
    from ssl_zoo.train.build import build_method

    method = build_method(load_run_config(run_dir))
    state = load_checkpoint(run_dir)
    method.load_state_dict(state["method"])
    return method.backbone, state["method"]


def _check_export(run_dir, fresh: nn.Module) -> dict:
    out = export_run(run_dir)
    weights = load_file(str(out / "backbone.safetensors"))
    missing, unexpected = fresh.load_state_dict(weights, strict=False)
    assert missing == [] and unexpected == []
    backbone, method_state = _trained_backbone(run_dir)
    # the ONLINE backbone: equal to backbone.*, not to the momentum target's copy (two EMA steps apart)
    name = next(k for k in weights if k.endswith("weight") and weights[k].ndim > 1)
    assert torch.equal(weights[name], method_state[f"backbone.{name}"])
    assert not torch.equal(weights[name], method_state[f"target.0.{name}"])
    assert torch.allclose(_features(fresh, run_dir), _features(backbone, run_dir), atol=1e-6)
    assert torch.allclose(_features(load_exported(out), run_dir), _features(backbone, run_dir), atol=1e-6)
    card = json.loads((out / "card.json").read_text())
    assert card["step"] == 2 and len(card["sha256"]) == 64 and card["config"]["encoder"]["arch"] == card["arch"]
    return card


def test_resnet_export_loads_into_torchvision(tmp_path):
    run_dir = _tiny_run(tmp_path, "encoder=resnet18_cifar")
    net = torchvision.models.resnet18()  # what a user writes: the load lines of docs/export.md
    net.fc = nn.Identity()
    net.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    card = _check_export(run_dir, net)
    assert (card["library"], card["cifar_stem"], card["in_chans"], card["feat_dim"]) == ("torchvision", True, 1, 512)


def test_vit_export_loads_into_timm(tmp_path):
    run_dir = _tiny_run(tmp_path, "encoder=vit_tiny")
    net = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=16, patch_size=4)
    card = _check_export(run_dir, net)
    assert (card["library"], card["feat_dim"]) == ("timm", 192)
    snippet_ns: dict = {}
    exec(card["load"].replace('"backbone.safetensors"', repr(str(run_dir / "export" / "backbone.safetensors"))),
         snippet_ns)  # the card's own load lines work as printed
    assert torch.allclose(_features(snippet_ns["net"], run_dir), _features(load_exported(run_dir / "export"), run_dir))


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    not_run = tmp_path / "plain"
    not_run.mkdir()
    assert main(["export", str(not_run)]) == 2
    assert main(["export", str(tmp_path / "missing")]) == 2
    run_dir = tmp_path / "runs" / "fresh"
    run_dir.mkdir(parents=True)
    cfg = load_config(tiny_overrides(tmp_path / "runs"))
    (run_dir / "config.yaml").write_text(__import__("omegaconf").OmegaConf.to_yaml(cfg))
    assert main(["export", str(run_dir)]) == 2  # a run without a checkpoint
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ssl-zoo: error: ") for line in err)
    assert "no checkpoint" in err[2] and "not an ssl-zoo run directory" in err[0]
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"] and list(not_run.iterdir()) == []

    done = _tiny_run(tmp_path, "encoder.width=4")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    assert main(["export", str(done), "--out", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]
    assert main(["export", str(done), "--out", str(tmp_path / "ok")]) == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["backbone.safetensors", "card.json"]
    assert not list(tmp_path.glob(".ok.tmp-*"))
