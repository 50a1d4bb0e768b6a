"""α-ReQ and LiDAR on constructed embeddings whose answer is known, their per-epoch columns in a real run, and the
"which metric tracks the probe" table and figure of `ssl-zoo report` on run folders written here."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ssl_zoo import api
from ssl_zoo.analysis import metric_correlation
from ssl_zoo.analysis.report import report
from ssl_zoo.config.load import load_config
from ssl_zoo.evaluation import monitors
from ssl_zoo.evaluation.label_free import alpha_req, lidar, power_law_alpha
from ssl_zoo.runs.config_file import write_config
from ssl_zoo.runs.metrics_file import metrics_or_problem, write_metrics
from ssl_zoo.runs.results_file import write_results
from ssl_zoo.train.epoch_monitor import EpochMonitor

from tiny import tiny_overrides

NEW_COLUMNS = ("alpha_req", "backbone_alpha_req", "lidar", "backbone_lidar")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _power_law_features(alpha: float, n: int = 6000, d: int = 64, seed: int = 0) -> torch.Tensor:
    """Rows whose covariance has eigenvalues i^-alpha, in a random basis and off the origin."""
    scales = torch.arange(1, d + 1, dtype=torch.float64).pow(-alpha / 2)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=_gen(seed + 1), dtype=torch.float64))
    return (torch.randn(n, d, generator=_gen(seed), dtype=torch.float64) * scales) @ basis.T + 2.0


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_alpha_req_recovers_the_exponent_of_a_power_law_spectrum(alpha):
    assert power_law_alpha(torch.arange(1, 101, dtype=torch.float64).pow(-alpha)) == pytest.approx(alpha, abs=1e-9)
    assert alpha_req(_power_law_features(alpha).float()) == pytest.approx(alpha, abs=0.06)


def test_alpha_req_fits_only_what_the_samples_can_show():
    # n = 20 samples in d = 64: the centred covariance has rank 19, its zero eigenvalues stay out of the fit
    assert math.isfinite(alpha_req(_power_law_features(1.0, n=20)))
    assert alpha_req(_power_law_features(1.0, n=20)) < 3
    rank_one = torch.randn(500, 1, generator=_gen(3)) @ torch.randn(1, 32, generator=_gen(4))
    assert math.isnan(alpha_req(rank_one))  # one direction: no slope to fit
    assert math.isnan(alpha_req(torch.ones(100, 8)))  # complete collapse


def _isotropic(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed))


def test_lidar_of_identical_views_counts_every_direction_the_images_spread_in():
    images = _isotropic(512, 16, 0)
    assert lidar([images] * 4) > 0.9 * 16  # Σ_w = δI: the between-image spread alone
    assert lidar([images[:, :1].expand(512, 16).contiguous()] * 4) == pytest.approx(1.0, abs=1e-3)  # on a line
    assert lidar([torch.ones(512, 16)] * 4) == pytest.approx(1.0, abs=1e-3)  # all images alike


def test_lidar_counts_only_the_directions_where_images_differ_more_than_their_views():
    """k of d dimensions hold the image, the other d - k change from view to view whatever the image: LiDAR ~ k,
    while RankMe of the same embeddings sees all d."""
    n, d, k, q = 512, 16, 4, 6
    image = _isotropic(n, k, 1)
    views = [torch.cat([image, _isotropic(n, d - k, 10 + v)], dim=1) for v in range(q)]
    assert lidar(views) == pytest.approx(k, rel=0.1)
    assert lidar([torch.cat([image, _isotropic(n, d - k, 2)], dim=1)] * q) > 0.9 * d  # same views: all d again
    assert monitors.effective_rank(torch.cat(views)) > 0.9 * d


def test_lidar_is_blind_to_scale_views_unrelated_to_the_image_are_not_low():
    """Whitening by Σ_w removes scale: views drawn without regard to the image, isotropic, give a whitened Σ_b
    that is isotropic too, as high as identical views (METHODS.md). LiDAR is low only where the image signal
    occupies fewer directions than the view noise."""
    unrelated = lidar([_isotropic(512, 16, 20 + v) for v in range(4)])
    identical = lidar([_isotropic(512, 16, 0)] * 4)
    assert unrelated == pytest.approx(identical, rel=0.05)


def test_lidar_without_a_cholesky_factor_is_the_same(monkeypatch):
    """Round-off that leaves Σ_w without a Cholesky factor (huge embeddings) whitens through its eigenvectors."""
    views = [torch.cat([_isotropic(300, 4, 1), _isotropic(300, 12, 30 + v)], dim=1) for v in range(5)]
    expected = lidar(views)
    monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda m: (m, torch.tensor(1)))
    assert lidar(views) == pytest.approx(expected, rel=1e-9)
    assert math.isnan(lidar([torch.full((10, 4), math.inf)] * 2)) and math.isnan(alpha_req(torch.full((10, 4), math.nan)))


def test_epoch_monitor_lidar_is_chunked_and_equals_one_pass(tmp_path):
    cfg = api.config("byol", *tiny_overrides(tmp_path)[1:])
    method, views = api.build(cfg), api.view_maker(cfg)
    images = torch.randint(0, 256, (90, int(cfg.data.channels), 8, 8), dtype=torch.uint8, generator=_gen(5))
    largest = [0]
    method.backbone.register_forward_hook(lambda _m, inputs, _o: largest.__setitem__(0, max(largest[0], len(inputs[0]))))

    def measured(batch: int) -> dict:
        return EpochMonitor(images, views, int(cfg.data.image_size), cfg.data.mean, cfg.data.std, 0,
                            torch.device("cpu"), batch, lidar_images=40, lidar_views=5).metrics(method)

    chunked = measured(16)
    assert largest[0] == 16
    whole = measured(len(images))
    for key in NEW_COLUMNS:
        assert math.isfinite(chunked[key]) and chunked[key] == pytest.approx(whole[key], rel=1e-5), key
    assert 1 <= chunked["lidar"] <= 32 and 1 <= chunked["backbone_lidar"] <= int(method.feat_dim)


def test_a_tiny_digits_run_logs_the_new_columns_finite(tmp_path):
    # the shipped LiDAR defaults: the alignment pair of every monitored image
    run = api.train(api.config("byol", *tiny_overrides(tmp_path, "trainer.epochs=1", "eval.enabled=false")[1:]))
    metrics, problem = metrics_or_problem(run)
    assert problem is None
    for column in NEW_COLUMNS:
        assert column in metrics and metrics[column].notna().all() and (metrics[column].abs() < 1e6).all(), column


# --- which metric tracks the probe ------------------------------------------------------------------------------
def _fake_run(folder, name: str, acc: float, rank: float, alpha: float, collapsed: bool = False) -> None:
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    write_config(run_dir, load_config(["method=byol", "data=digits", "trainer.epochs=2", f"seed={len(name)}"]))
    final = {"epoch": 2, "step": 20, "loss": 1.0, "z_std": 0.1, "z_std_ref": 0.125, "effective_rank": rank,
             "alpha_req": alpha, "lidar": rank / 2, "alignment": 1 - acc / 100, "uniformity": -acc / 25,
             "backbone_effective_rank": 20.0, "backbone_alpha_req": 1.0, "backbone_lidar": 5.0}
    first = {**final, "epoch": 1, "step": 10, "effective_rank": 100 - rank}  # the other order: must not be read
    write_metrics(run_dir, [first, final])
    write_results(run_dir, {"method": "byol", "ablation": "none", "status": "finished", "linear_top1": acc,
                            "knn_top1": acc - 3, "collapsed": collapsed, "collapse_reason": ""})


def _sweep(tmp_path, count: int):
    sweep = tmp_path / "sweep"
    # accuracy rises with the effective rank and falls as α leaves 1, whichever side
    cases = [(30.0, 1.5, 3.0, True), (50.0, 4.0, 0.2), (60.0, 8.0, 1.6), (70.0, 12.0, 0.7), (80.0, 20.0, 1.1)]
    for i, (acc, rank, alpha, *collapsed) in enumerate(cases[:count]):
        _fake_run(sweep, f"run{'x' * i}", acc, rank, alpha, bool(collapsed and collapsed[0]))
    return sweep


def _rho(table: pd.DataFrame, metric: str, embedding: str = "projector") -> tuple[float, int]:
    row = table[(table["metric"] == metric) & (table["embedding"] == embedding)].iloc[0]
    return row["spearman ρ"], row["n"]


def test_spearman_table_signs_and_counts(tmp_path):
    from ssl_zoo.analysis.results import gather_runs

    final = metric_correlation.final_metrics(gather_runs([_sweep(tmp_path, 5)]))
    table = metric_correlation.correlation_table(final)
    assert _rho(table, "effective rank (RankMe)") == (pytest.approx(1.0), 5)  # last row, not the first epoch's
    assert _rho(table, "α-ReQ −abs(α−1)")[0] == pytest.approx(1.0)
    assert abs(_rho(table, "α-ReQ α")[0]) < 0.5  # raw α: not monotone in accuracy here
    assert _rho(table, "uniformity")[0] == pytest.approx(-1.0) and _rho(table, "alignment")[0] == pytest.approx(-1.0)
    assert _rho(table, "LiDAR") == (pytest.approx(1.0), 5)
    assert math.isnan(_rho(table, "effective rank (RankMe)", "backbone")[0])  # the same value in every run
    assert math.isnan(_rho(table, "z_std")[0])
    assert final["collapsed"].tolist().count(True) == 1


def test_report_shows_the_table_and_writes_a_readable_scatter(tmp_path):
    md_path, html_path = report(_sweep(tmp_path, 5))
    md = md_path.read_text()
    section = md.split("## Which metric tracks the probe")[1].split("## Plots")[0]
    line = next(ln for ln in section.splitlines() if ln.startswith("| effective rank (RankMe) | projector"))
    assert [cell.strip() for cell in line.split("|")[3:5]] == ["5", "+1.00"]
    assert "![Label-free metrics" in section and "metric_vs_probe.png" in html_path.read_text()
    assert (md_path.parent / "metric_vs_probe.png").stat().st_size > 20_000


def test_fewer_than_three_runs_is_one_line(tmp_path):
    md_path, _ = report(_sweep(tmp_path, 2))
    section = md_path.read_text().split("## Which metric tracks the probe")[1].split("## Plots")[0]
    assert "Fewer than 3 finished runs have both" in section and "|" not in section
    assert not (md_path.parent / "metric_vs_probe.png").exists()


def test_compare_shows_the_same_table(tmp_path):
    from ssl_zoo.commands.compare import compare

    text, _ = compare([str(_sweep(tmp_path, 4))], str(tmp_path / "out"))
    section = text.split("## Which metric tracks the probe")[1]
    line = next(ln for ln in section.splitlines() if ln.startswith("| LiDAR ") and "| projector" in ln)
    assert [cell.strip() for cell in line.split("|")[3:5]] == ["4", "+1.00"]


@pytest.mark.parametrize("override, fragment", [("monitor.lidar_views=1", "monitor.lidar_views"),
                                                ("monitor.lidar_images=-1", "monitor.lidar_images")])
def test_lidar_settings_out_of_range_are_one_line(override, fragment):
    from ssl_zoo.common.errors import UserError

    with pytest.raises(UserError) as err:
        load_config([override])
    assert "\n" not in str(err.value) and fragment in str(err.value) and "out of range" in str(err.value)
