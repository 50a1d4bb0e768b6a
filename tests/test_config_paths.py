"""Every way a config can go wrong ends in one line, before anything is written or any run of a sweep starts.

The classes: failing interpolations, nodes set to scalars (and scalars to nodes), sweep expressions that
expand to nothing or cannot be expanded, run directory names the file system cannot hold, sizes no machine can
hold (estimated on the meta device), sweeps whose later runs are invalid (every run checked before the first
starts, locally and before a SLURM submission), a run directory's config.yaml edited by hand, checkpoints
lacking an entry, and pretrained weights that cannot be fetched. Most cases call the loader or the sweep
expansion in this process; a few go through ssl_zoo.cli.main for the exit code and the one line.
"""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch
from omegaconf import OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.config import footprint
from ssl_zoo.config.load import check_run_config, load_config
from ssl_zoo.config.overrides import MAX_RUNS, expand_sweep
from ssl_zoo.config.run_paths import check_paths
from ssl_zoo.runs.checkpoint import RESUME_KEYS, find_checkpoint, save_checkpoint
from ssl_zoo.runs.identity import run_dir_for

from in_process import run_main
from tiny import tiny_overrides


def _refused(overrides: list[str], *fragments: str) -> str:
    """load_config refuses the overrides with one line holding every fragment."""
    with pytest.raises(UserError) as err:
        load_config(overrides)
    line = str(err.value)
    assert "\n" not in line and all(f in line for f in fragments), line
    return line


def _cli_refuses(capsys, argv: list[str], *fragments: str) -> str:
    code, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ssl-zoo: error: "), (code, err)
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in err
    return lines[0]


# --- interpolations --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, fragments", [
    (["trainer.lr=${nope}"], ["'trainer.lr=${nope}'", "nope"]),
    (["trainer.lr=${oc.env:SSL_ZOO_SURELY_UNSET}"], ["SSL_ZOO_SURELY_UNSET is not set", "${oc.env:"]),
    (["trainer.lr=${trainer.lr}"], ["'trainer.lr=${trainer.lr}'", "refers to itself"]),
    (["trainer.lr=${trainer.min_lr}", "trainer.min_lr=${trainer.lr}"], ["refers to itself"]),
    (["seed=${no_such_resolver:1}"], ["'seed=${no_such_resolver:1}'", "no_such_resolver"]),
    (["trainer.epochs=${trainer.lr}"], ["trainer.epochs=0.05", "wrong type"]),
    (["data.image_size=${data.mean}"], ["data.image_size", "wrong type"]),
    (["trainer.lr=${oc.decode:'[1'}"], ["trainer.lr"]),
])
def test_failing_interpolations_name_their_override(tmp_path, overrides, fragments):
    _refused(tiny_overrides(tmp_path, *overrides), *fragments)


def test_a_working_interpolation_still_works(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_ZOO_TEST_LR", "0.2")
    cfg = load_config(tiny_overrides(tmp_path, "trainer.lr='${oc.decode:${oc.env:SSL_ZOO_TEST_LR}}'",
                                     "trainer.min_lr=${trainer.lr}"))
    assert cfg.trainer.lr == 0.2 and cfg.trainer.min_lr == 0.2


@pytest.mark.parametrize("override, fragment", [
    ("=5", "has no key before the '='"),
    ("seed", "cannot read the override 'seed'"),
    ("seed==1", "cannot read the override 'seed==1'"),
    ("trainer..lr=1", "cannot read the override"),
    ("trainer.lr=${", "cannot read the override"),
    ("+trainer.extra=1", "adds a key the config does not have"),
    ("++trainer.lr=1", "adds a key the config does not have"),
])
def test_overrides_hydra_cannot_read_are_one_line_naming_them(override, fragment):
    _refused([override], fragment)


# --- nodes and values swapped ----------------------------------------------------------------------------------
@pytest.mark.parametrize("override, fragments", [
    ("trainer=5", ["trainer"]),
    ("trainer=null", ["trainer"]),
    ("method.projector=5", ["method.projector"]),
    ("method.projector=[64,32]", ["method.projector"]),
    ("eval.finetune=none", ["eval.finetune"]),
    ("data.mean=0.5", ["data.mean", "list"]),
    ("trainer.betas={a:1}", ["trainer.betas"]),
    ("trainer.lr=[0.1,0.2]", ["trainer.lr", "wrong type"]),
    ("trainer.lr={a:1}", ["trainer.lr", "wrong type"]),
    ("method.projector.hidden_dim=[64]", ["method.projector.hidden_dim", "wrong type"]),
    ("method=5", ["unknown method '5'"]),
    ("~trainer", ["trainer"]),
    ("~method.projector", ["projector"]),
])
def test_a_node_set_to_a_value_or_a_value_to_a_node_is_one_line(tmp_path, override, fragments):
    _refused(tiny_overrides(tmp_path, override), *fragments)


# --- sweeps ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, fragments", [
    (["seed=range(0,0)"], ["'seed=range(0,0)' expands to no value"]),
    (["seed=range(5,0)"], ["expands to no value"]),
    (["trainer.lr=range(0.5,0.1,0.1)"], ["expands to no value"]),
    (["method=glob(zzz*)"], ["matches no method", "byol"]),
    (["method=glob(*,exclude=*)"], ["matches no method"]),
    (["seed=glob(*)"], ["glob() picks options of a config group", "seed"]),
    (["seed=range(0,10,0)"], ["seed=range(0,10,0)"]),
    (["trainer.lr=interval(0.1,1.0)"], ["at random"]),
    ([f"seed=range(0,{MAX_RUNS + 1})"], ["at most"]),
    (["seed=range(0,200)", "trainer.lr=range(1,200)"], ["39800 runs", "split it"]),
    (["seed=choice()"], ["seed"]),
    (["seed=[0,1"], ["seed=[0,1"]),
])
def test_sweeps_that_expand_to_nothing_or_fail_are_one_line(overrides, fragments):
    with pytest.raises(UserError) as err:
        expand_sweep(overrides)
    assert "\n" not in str(err.value) and all(f in str(err.value) for f in fragments), str(err.value)


def test_sweeps_that_work_expand_as_before():
    assert expand_sweep(["method=glob(sim*)", "seed=range(0,2)", "trainer.epochs=1"]) == [
        ["method=simclr", "seed=0", "trainer.epochs=1"], ["method=simclr", "seed=1", "trainer.epochs=1"],
        ["method=simsiam", "seed=0", "trainer.epochs=1"], ["method=simsiam", "seed=1", "trainer.epochs=1"]]
    assert expand_sweep(["run_name='a,b'"]) == [["run_name='a,b'"]]  # a quoted comma is a value, not a sweep
    assert len(expand_sweep(["trainer.lr=range(0.1,0.5,0.1)"])) == 4
    assert expand_sweep(["seed=0,1", "trainer.epochs=1", "seed=2"]) == [["seed=2", "trainer.epochs=1"]]  # last wins


@pytest.mark.parametrize("override", ["seed=0,1", "method=glob(*)", "seed=range(0,2)"])
def test_a_sweep_without_multirun_says_add_m(tmp_path, override):
    _refused(tiny_overrides(tmp_path, override), "is a sweep", "ssl-zoo train -m")


# --- run directory names ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One checked config; the path checks below run on copies of it with one key changed."""
    return load_config(tiny_overrides(tmp_path_factory.mktemp("paths")))


def _with(cfg, **keys):
    changed = cfg.copy()
    for key, value in keys.items():
        OmegaConf.update(changed, key, value)
    return changed


@pytest.mark.parametrize("run_name, fragment", [
    ("", "is not a folder name"),
    (".", "is not a folder name"),
    ("..", "is not a folder name"),
    ("a/b", "has a '/'"),
    ("../elsewhere", "has a '/'"),
    ("/abs/path", "has a '/'"),
    ("a\nb", "control character"),
    ("a\tb", "control character"),
    ("a\x00b", "control character"),
    ("x" * 300, "300 bytes long"),
])
def test_run_names_the_file_system_cannot_hold_are_refused(loaded, run_name, fragment):
    with pytest.raises(UserError, match="run_name") as err:
        check_paths(_with(loaded, run_name=run_name))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_run_dir_paths_past_the_file_system_limits_are_refused(loaded, tmp_path):
    with pytest.raises(UserError, match="300 bytes long.*shorten out_dir"):
        check_paths(_with(loaded, out_dir=str(tmp_path / ("d" * 300))))
    deep = tmp_path.joinpath(*["d" * 200] * 21)  # each part fits; the whole path does not (PATH_MAX 4096)
    with pytest.raises(UserError, match="shorten out_dir or run_name"):
        check_paths(_with(loaded, out_dir=str(deep)))
    for key in ("out_dir", "data.root"):  # (and data.index_dir, which streamed datasets have)
        with pytest.raises(UserError, match=f"{key}=.*NUL"):
            check_paths(_with(loaded, **{key: f"{tmp_path}/a\x00b"}))
    check_paths(_with(loaded, run_name="x" * 200, out_dir=str(tmp_path / ("d" * 200))))  # long but legal


def test_run_name_and_data_keys_through_the_loader(tmp_path):
    _refused(tiny_overrides(tmp_path, "run_name='a/b'"), "run_name='a/b' has a '/'")
    _refused(tiny_overrides(tmp_path, "run_name=''"), "not a folder name")
    _refused(tiny_overrides(tmp_path, "data=imagefolder", "data.root=/x", "data.workers=100000"),
             "data.workers=100000", "at most")


# --- sizes no machine can hold ---------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, fragments", [
    (["data.image_size=1000000"], ["of activations", "lower data.image_size"]),
    (["encoder.width=1000000"], ["parameters", "lower encoder.width"]),
    (["method.projector.hidden_dim=1000000000"], ["parameters", "method.projector"]),
    (["method.predictor.hidden_dim=1000000000"], ["parameters", "method.predictor"]),
    (["trainer.batch_size=1000000000"], ["of activations", "trainer.batch_size"]),
    (["views=multicrop", "views.crops.local.n=100000000"], ["of activations"]),
])
def test_absurd_sizes_are_refused_with_the_number(tmp_path, overrides, fragments):
    line = _refused(tiny_overrides(tmp_path, *overrides), "the model would need", *fragments)
    assert any(unit in line.split("need")[1].split("of memory")[0] for unit in ("TB", "PB", "EB")), line


@pytest.mark.parametrize("method, override", [("dino", "method.head.num_prototypes=1000000000"),
                                              ("swav", "method.num_prototypes=1000000000"),
                                              ("simclr", "method.projector.layers=1000000")])
def test_absurd_head_sizes_of_other_methods(tmp_path, method, override):
    base = [f"method={method}", "encoder.width=8", "trainer.batch_size=64", f"out_dir={tmp_path}"]
    _refused([*base, override], "the model would need", "parameters", "lower")


@pytest.mark.slow
def test_a_vit_s_attention_matrices_count(tmp_path):
    """ViT-Tiny, patch 4, 512 px: 16384 tokens; the leaf outputs are ~100 GB, the attention matrices terabytes."""
    _refused(tiny_overrides(tmp_path, "encoder=vit_tiny", "data.image_size=512"), "TB of activations")
    assert load_config(tiny_overrides(tmp_path, "encoder=vit_tiny", "data.image_size=64")).data.image_size == 64


def test_large_but_real_configs_pass_the_size_check(tmp_path):
    """ResNet-50 on 224 px ImageNet with batch 256 and BYOL's 4096-wide heads: far below the limit."""
    cfg = load_config(["data=imagenet", "data.root=/nowhere", "encoder=resnet50", "trainer.batch_size=256",
                       f"out_dir={tmp_path}"])
    fp = footprint.estimate(cfg)
    assert 20e6 < fp.trained < 200e6  # ResNet-50 (23.5M) + projector + predictor
    assert 1e9 < fp.activation_bytes < footprint.FLOOR and fp.total < footprint.FLOOR


# --- every run of a sweep checked before the first starts -------------------------------------------------------
def test_a_sweep_whose_second_run_cannot_train_starts_none(tmp_path, capsys):
    out = tmp_path / "out"
    line = _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "trainer.batch_size=64,5000",
                                                                "eval.enabled=false")],
                        "run 2/2 (trainer.batch_size=5000)", "larger than the 1347 training images")
    assert "no run of the sweep was started" in line and not out.exists()


def test_a_sweep_whose_second_run_would_shrink_knn_k_starts_none(tmp_path, capsys):
    out = tmp_path / "out"
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "data.train_subset=1000,100", "eval.knn_k=200")],
                 "run 2/2 (data.train_subset=100)", "eval.knn_k=200 is more than the 100 train images")
    assert not out.exists()


def test_a_sweep_with_an_invalid_run_names_it(tmp_path, capsys):
    out = tmp_path / "out"
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "trainer.lr=0.1,-1")],
                 "run 2/2 (trainer.lr=-1)", "out of range")
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "seed=range(0,0)")], "expands to no value")
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "encoder.width=8,1000000")],
                 "run 2/2 (encoder.width=1000000)", "the model would need")
    assert not out.exists()


def test_a_slurm_sweep_is_checked_against_the_data_before_submission(tmp_path, capsys):
    out = tmp_path / "out"
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "trainer.batch_size=64,700", "launcher=slurm",
                                                         "launcher.tasks_per_node=2")],
                 "run 2/2 (trainer.batch_size=700)", "700 x 2 process(es)")
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "seed=0,1", "launcher=slurm",
                                                         "launcher.timeout_min=0")],
                 "launcher.timeout_min=0 is out of range")
    assert not out.exists()


# --- a run directory's config.yaml edited by hand ---------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_config(tmp_path_factory):
    return load_config(tiny_overrides(tmp_path_factory.mktemp("saved")))


@pytest.mark.parametrize("edit, fragment", [
    ({"trainer": {"batch_size": "many"}}, "trainer.batch_size='many' has the wrong type"),
    ({"trainer": {"batch_size": -3}}, "trainer.batch_size=-3 is out of range"),
    ({"method": {"projector": {"hidden_dim": 0}}}, "method.projector.hidden_dim=0"),
    ({"method": {"projector": 7}}, "method.projector"),
    ({"encoder": {"width": 10**7}}, "the model would need"),
    ({"trainer": {"lr": "${nope}"}}, "nope"),
    ({"method": {"name": "byol2"}}, "method.name='byol2'"),
    ({"data": {"mean": 0.5}}, "data.mean"),
])
def test_a_hand_edited_run_config_is_one_line_naming_the_file(saved_config, tmp_path, edit, fragment):
    cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(saved_config)), edit)
    path = tmp_path / "config.yaml"
    with pytest.raises(UserError) as err:
        check_run_config(cfg, path)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value), str(err.value)


def test_an_unedited_or_older_run_config_passes(saved_config, tmp_path):
    check_run_config(OmegaConf.create(OmegaConf.to_container(saved_config)), tmp_path / "config.yaml")
    older = OmegaConf.to_container(saved_config)
    del older["trainer"]["steps"], older["data"]["train_subset"]  # keys added after runs existed
    check_run_config(OmegaConf.create(older), tmp_path / "config.yaml")
    with pytest.raises(UserError, match="holds ListConfig"):
        check_run_config(OmegaConf.create([1, 2]), tmp_path / "config.yaml")


def test_a_sweep_over_a_run_dir_with_a_broken_config_is_one_line(tmp_path, capsys):
    args = tiny_overrides(tmp_path, "eval.enabled=false", "trainer.epochs=1")
    run_dir = run_dir_for(load_config([*args, "seed=1"]))
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("trainer: [unclosed\n")
    (run_dir / "results.json").write_text('{"status": "finished"}')
    _cli_refuses(capsys, ["train", "-m", *args, "seed=0,1"], "run 2/2 (seed=1)", "config.yaml is unreadable")
    assert sorted(p.name for p in tmp_path.iterdir()) == [run_dir.name]


# --- checkpoints lacking an entry -------------------------------------------------------------------------------
def _state(at: int, **drop_or_set) -> dict:
    state = {"method": {"w": torch.zeros(3)}, "optimizer": {}, "step": at, "probe": {}, "probe_opt": {},
             "rows": [], "elapsed": 0.0, "sums": {}}
    for key, value in drop_or_set.items():
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


def test_a_checkpoint_lacking_an_entry_names_it_and_resume_falls_back(tmp_path, capsys):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2, rows=None))
    state, path = find_checkpoint(tmp_path, RESUME_KEYS)
    assert state["step"] == 1 and path.name == "prev.pt"
    assert "no 'rows' entry" in capsys.readouterr().err
    assert find_checkpoint(tmp_path)[0]["step"] == 2  # evaluation reads only method and step: last.pt serves


@pytest.mark.parametrize("change, fragment", [
    ({"probe_opt": None}, "no 'probe_opt' entry"),
    ({"step": "12"}, "'step' entry is a str"),
    ({"elapsed": [1.0]}, "'elapsed' entry is a list"),
    ({"method": None}, "no 'method' entry"),
    ({"sums": [1]}, "'sums' entry is a list"),
])
def test_checkpoints_all_lacking_an_entry_are_one_line_naming_it(tmp_path, change, fragment):
    save_checkpoint(tmp_path, _state(1, **change))
    save_checkpoint(tmp_path, _state(2, **change))
    with pytest.raises(UserError, match="no readable checkpoint") as err:
        find_checkpoint(tmp_path, RESUME_KEYS)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_resuming_from_checkpoints_lacking_an_entry_is_one_line_naming_it(tmp_path, capsys):
    from ssl_zoo.runs.config_file import write_config

    args = tiny_overrides(tmp_path, "eval.enabled=false", "device=cpu")
    run_dir = run_dir_for(load_config(args))
    run_dir.mkdir(parents=True)
    write_config(run_dir, load_config(args))
    for at in (1, 2):
        save_checkpoint(run_dir, _state(at, rows=None))
    _cli_refuses(capsys, ["train", *args], "no readable checkpoint", "no 'rows' entry")


# --- pretrained weights ----------------------------------------------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """torch.hub's cache in tmp_path, and every download failing as without a network."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def _encoder(**keys):
    return OmegaConf.create({"name": "resnet18", "arch": "resnet18", "width": None, "cifar_stem": False,
                             "pretrained": True, **keys})


def test_pretrained_resnet_without_a_network_is_one_line(offline_hub):
    from ssl_zoo.models.encoders import build_encoder

    with pytest.raises(UserError) as err:
        build_encoder(_encoder(), 3, 32)
    line = str(err.value)
    assert "\n" not in line and "encoder.pretrained=true" in line and "URLError" in line and "network" in line


def test_pretrained_resnet_loads_the_cached_weights(offline_hub):
    """No download: torchvision's file in the cache is what the backbone starts from (grey images: the RGB
    stem filters summed)."""
    import torchvision

    from ssl_zoo.models.encoders import build_encoder

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    reference = torchvision.models.resnet18()
    (offline_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), offline_hub / "checkpoints" / os.path.basename(weights.url))
    net, dim = build_encoder(_encoder(), 3, 32)
    assert dim == 512 and torch.equal(net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    grey, _ = build_encoder(_encoder(), 1, 32)
    assert torch.allclose(grey.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))


def test_pretrained_timm_model_without_a_network_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from ssl_zoo.models.encoders import build_encoder

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what no network looks like, at once
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # and nothing cached
    with pytest.raises(UserError) as err:
        build_encoder(_encoder(name="timm"), 3, 32)
    line = str(err.value)
    assert "\n" not in line and "timm's pretrained weights of resnet18" in line and "Hugging Face cache" in line


@pytest.mark.parametrize("overrides, fragment", [
    (["encoder.pretrained=true"], "small_cnn has no pretrained weights"),
    (["encoder=resnet18_cifar", "encoder.pretrained=true"], "CIFAR stem"),
])
def test_pretrained_that_cannot_mean_anything_is_refused_at_load(tmp_path, overrides, fragment):
    _refused(tiny_overrides(tmp_path, *overrides), fragment)


def test_a_pretrained_sweep_without_a_network_starts_no_run(tmp_path, capsys, offline_hub):
    out = tmp_path / "out"
    _cli_refuses(capsys, ["train", "-m", *tiny_overrides(out, "encoder=resnet18", "encoder.pretrained=true",
                                                         "seed=0,1", "eval.enabled=false")],
                 "run 1/2 (seed=0)", "encoder.pretrained=true")
    assert not out.exists()


# --- the CLI: one line, exit 2, nothing written -----------------------------------------------------------------
@pytest.mark.parametrize("overrides, fragment", [
    (["trainer.lr=${nope}"], "nope"),
    (["trainer=5"], "trainer"),
    (["run_name=a/b"], "has a '/'"),
    (["data.image_size=1000000"], "the model would need"),
    (["seed=0,1"], "train -m"),
])
def test_the_cli_prints_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, overrides, fragment):
    monkeypatch.chdir(tmp_path)
    _cli_refuses(capsys, ["train", *tiny_overrides(tmp_path / "out", *overrides)], fragment)
    assert list(tmp_path.iterdir()) == []
