"""eval.protocol=finetune: fixed class-balanced label subsets, fine-tuning that learns, results in results.json
and the compare table; kNN k chosen from the training-set size unless set."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import open_dict

from ssl_zoo.cli import main
from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.evaluation.finetune import balanced_subset, subset_sha1
from ssl_zoo.evaluation.probes import auto_knn_k
from ssl_zoo.launch.run import train
from ssl_zoo.runs.checkpoint import load_checkpoint

from tiny import tiny_overrides


def test_balanced_subset_is_fixed_balanced_and_seeded():
    labels = torch.arange(1000) % 10
    a, b = balanced_subset(labels, 0.1, 10, seed=0), balanced_subset(labels, 0.1, 10, seed=0)
    assert torch.equal(a, b) and len(a) == 100
    assert torch.bincount(labels[a], minlength=10).tolist() == [10] * 10
    assert not torch.equal(a, balanced_subset(labels, 0.1, 10, seed=1))
    assert torch.bincount(labels[balanced_subset(labels, 0.001, 10, 0)]).tolist() == [1] * 10  # at least one
    assert len(balanced_subset(labels, 1.0, 10, 0)) == 1000


def test_auto_knn_k_follows_the_training_set_size():
    assert auto_knn_k(50_000, 10) == 200 and auto_knn_k(1_281_167, 1000) == 192
    assert auto_knn_k(1347, 10) == 20 and auto_knn_k(400, 10) == 6 and auto_knn_k(5, 10) == 1


@pytest.mark.slow
def test_eval_finetune_writes_results_and_compare_columns(tmp_path, capsys):
    cfg = load_config(tiny_overrides(tmp_path / "runs", "trainer.epochs=1", "monitor.num_images=32"))
    run_dir = train(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["knn_k"] == 20 and "finetune" not in results  # auto k on digits; probes only by default
    before = load_checkpoint(run_dir)["method"]
    code = main(["eval", f"run_dir={run_dir}", "eval.protocol=finetune", "eval.finetune.epochs=3",
                 "eval.finetune.min_steps=10", "eval.finetune.lr=0.5", "eval.knn_k=10"])
    assert code == 0
    assert "fine-tuned on 1% of the labels (10 images" in capsys.readouterr().out
    results = json.loads((run_dir / "results.json").read_text())
    ft = results["finetune"]
    assert list(ft) == ["100%", "10%", "1%"] and results["knn_k"] == 10
    assert (ft["100%"]["n_labels"], ft["10%"]["n_labels"], ft["1%"]["n_labels"]) == (1347, 130, 10)
    assert ft["10%"]["per_class_min"] == ft["10%"]["per_class_max"] == 13
    saved = [int(i) for i in (run_dir / ft["10%"]["indices_file"]).read_text().split()]
    assert subset_sha1(torch.tensor(saved)) == ft["10%"]["subset_sha1"]
    assert ft["100%"]["top1"] > 60 > 10  # it learns (10 classes: chance is 10%)
    after = load_checkpoint(run_dir)["method"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pretrained weights are untouched

    from ssl_zoo.analysis.results import gather_runs, markdown_tables, summarize
    runs = gather_runs([tmp_path / "runs"])
    assert runs["finetune_1pct_top1"].iloc[0] == ft["1%"]["top1"]
    assert "fine-tune 10%" in markdown_tables(runs, summarize(runs))


def test_old_run_configs_get_new_eval_keys(tmp_path):
    from omegaconf import OmegaConf

    from ssl_zoo.launch.run_eval import apply_overrides, load_run_config

    cfg = load_config(tiny_overrides(tmp_path))
    with open_dict(cfg):
        del cfg.eval["protocol"], cfg.eval["finetune"]
        cfg.eval.knn_k = 200  # what runs made before auto-k recorded
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    loaded = apply_overrides(load_run_config(tmp_path), ["eval.protocol=finetune", "eval.finetune.label_fractions=[0.1]"])
    assert loaded.eval.protocol == "finetune" and list(loaded.eval.finetune.label_fractions) == [0.1]
    assert loaded.eval.knn_k == 200


def test_finetune_on_a_streamed_dataset_is_refused_before_training(tmp_path):
    folder = tmp_path / "folder"
    with pytest.raises(UserError, match="data.stream=false"):
        load_config(tiny_overrides(tmp_path, "data=imagefolder", f"data.root={folder}", "eval.protocol=finetune"))
    assert not list(tmp_path.iterdir())
