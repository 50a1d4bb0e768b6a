"""What the comparison and collapse plots say: labels free of dataset keys when datasets are mixed, timm encoders
named by their model, "1 epoch", no "mean ± std" for one seed, spectra cut where the sample size ends them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_compare import finished, make_run

from ssl_zoo.analysis.compare_plots import epochs_text, plot_probe_accuracy, spread_text
from ssl_zoo.analysis.report import sample_limited
from ssl_zoo.analysis.results import gather_runs
from ssl_zoo.config.load import load_config
from ssl_zoo.runs.identity import encoder_label

from tiny import tiny_overrides


def test_labels_do_not_list_dataset_keys_when_datasets_are_mixed(tmp_path):
    make_run(tmp_path, results=finished(80.0, 90.0))
    make_run(tmp_path, "data=fashion_mnist", "data.image_size=16", results=finished(70.0, 80.0))
    make_run(tmp_path, "trainer.lr=0.1", results=finished(81.0, 91.0))
    runs = gather_runs([tmp_path])
    labels = dict(zip(runs["data"] + "/" + runs["label"], runs["label"]))
    assert sorted(labels.values()) == ["byol", "byol [trainer.lr=0.05]", "byol [trainer.lr=0.1]"], labels
    assert plot_probe_accuracy(runs, tmp_path / "probes.png")


def test_timm_encoders_are_named_by_their_model():
    cfg = load_config(tiny_overrides("unused", "encoder=timm", "encoder.arch=resnet10t", "data.channels=1"))
    assert encoder_label(cfg) == "resnet10t (timm)"
    assert encoder_label(load_config(tiny_overrides("unused"))) == "small_cnn"


def test_titles_count_epochs_and_seeds():
    assert (epochs_text(1), epochs_text(3)) == ("1 epoch", "3 epochs")
    assert spread_text(1) == "one seed, no error bar" and spread_text(3) == "mean ± std over 3 seeds"


def test_a_spectrum_of_fewer_images_than_dimensions_ends_at_n_minus_one():
    ev = np.r_[np.logspace(0, -3, 449), 1e-18]  # 450 images, 2048 dimensions: the last value is the centring's 0
    cut, n = sample_limited(ev, 2048)
    assert n == 450 and len(cut) == 449 and cut.min() > 1e-6
    full, n = sample_limited(np.logspace(0, -3, 128), 128)  # 1024 images, 128 dimensions: nothing to cut
    assert n is None and len(full) == 128
    assert pd.notna(sample_limited(ev, None)[0]).all() and sample_limited(ev, None)[1] is None
