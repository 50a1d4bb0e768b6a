"""Every bad input a user can give ends in exit code 2, one line on stderr, no traceback, and nothing written.

The inputs: configs (unknown names, wrong types, bad sizes, rules of a method / ablation / views / encoder),
paths (data folders, out_dir), run directories (finished, diverged, another config, foreign, corrupt files)
and dataset files (truncated or corrupt). Most go through ssl_zoo.cli.main in this process (one `ssl-zoo`
process costs seconds of imports); a handful go through the real `ssl-zoo` executable, in parallel.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from ssl_zoo.config.load import load_config
from ssl_zoo.runs.atomic import write_json
from ssl_zoo.runs.checkpoint import save_checkpoint
from ssl_zoo.runs.config_file import write_config
from ssl_zoo.runs.identity import run_dir_for

from in_process import run_main
from tiny import tiny_overrides

FASHION = Path("/usr/share/datasets/fashion-mnist")


class _Payload:
    """Pickled code: if a checkpoint load ever ran it, a folder would appear (and the tree check would see it)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _idx(shape: tuple[int, ...], n_bytes: int | None = None) -> bytes:
    """An idx file header for `shape` followed by n_bytes of pixels (all of them by default)."""
    body = bytes(n_bytes if n_bytes is not None else int(torch.tensor(shape).prod()))
    return struct.pack(">HBB", 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + body


def _fashion_root(root: Path, name: str, train_images: bytes, gz: bool = True) -> Path:
    """A Fashion-MNIST folder whose train images file is `train_images`; small valid files for the rest."""
    folder = root / name
    folder.mkdir()
    files = {"train-images-idx3-ubyte": train_images, "train-labels-idx1-ubyte": _idx((10,)),
             "t10k-images-idx3-ubyte": _idx((10, 28, 28)), "t10k-labels-idx1-ubyte": _idx((10,))}
    for stem, data in files.items():
        if gz and stem != "train-images-idx3-ubyte":
            data = gzip.compress(data)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """One folder holding every bad thing; the tests check that nothing in it ever changes."""
    root = tmp_path_factory.mktemp("bad_inputs")
    out = root / "out"
    out.mkdir()
    (root / "a_file.txt").write_text("not a folder")
    base = [*tiny_overrides(out), "device=cpu", "eval.enabled=false"]

    def fabricate(name: str, *extra: str, status: str | None = None, checkpoints: dict | None = None) -> list[str]:
        args = [*base, f"run_name={name}", *extra]
        cfg = load_config(args)
        run_dir = run_dir_for(cfg)
        run_dir.mkdir(parents=True)
        write_config(run_dir, cfg)
        if status:
            write_json(run_dir / "results.json", {"status": status, "error": "loss is nan at step 20, epoch 1"})
        for file_name, content in (checkpoints or {}).items():
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            if isinstance(content, bytes):
                (run_dir / "checkpoints" / file_name).write_bytes(content)
            else:
                torch.save(content, run_dir / "checkpoints" / file_name)
        return args

    good = root / "good_ckpt"
    save_checkpoint(good, {"method": {"w": torch.zeros(4096)}, "optimizer": {}, "step": 1})
    whole = (good / "checkpoints" / "last.pt").read_bytes()
    shutil.rmtree(good)
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # inside the tensor data: only the zip CRC tells
    runs = {
        "finished": fabricate("finished", status="finished"),
        "diverged": fabricate("diverged", status="diverged"),
        "results_garbage": fabricate("results_garbage"),
        "results_wrong_types": fabricate("results_wrong_types"),
        "other_config": fabricate("other_config", "seed=1"),
        "never": fabricate("never"),
        "config_garbage": fabricate("config_garbage"),
        "both_bad": fabricate("both_bad", checkpoints={"last.pt": whole[: len(whole) // 2], "prev.pt": b"\0" * 64}),
        "last_bad": fabricate("last_bad", checkpoints={"last.pt": whole[:100]}),
        "flipped": fabricate("flipped", checkpoints={"last.pt": bytes(flipped)}),
        "misfit": fabricate("misfit", checkpoints={"last.pt": {"method": {"x": torch.zeros(2)}, "optimizer": {},
                                                              "step": 3, "rows": [], "elapsed": 0.0, "sums": {}}}),
        "pickled_code": fabricate("pickled_code", checkpoints={"last.pt": {"method": {}, "optimizer": {}, "step": 1,
                                                                          "x": _Payload(root / "pwned")}}),
    }
    (run_dir_for(load_config(runs["results_garbage"])) / "results.json").write_text("{truncated")
    (run_dir_for(load_config(runs["results_wrong_types"])) / "results.json").write_text(
        '{"status": ["finished"], "knn_top1": "high"}')  # JSON, but not what ssl-zoo writes
    (run_dir_for(load_config(runs["config_garbage"])) / "config.yaml").write_text("trainer: [unclosed\n")
    (out / "foreign").mkdir()
    (out / "foreign" / "notes.txt").write_text("someone else's")
    (out / "a_file_run").write_text("")

    gz = (FASHION / "train-images-idx3-ubyte.gz").read_bytes()[:300_000] if FASHION.exists() else \
        gzip.compress(_idx((60000, 28, 28)))[:300_000]
    corrupt = bytearray(gzip.compress(_idx((100, 28, 28), None) + os.urandom(20_000)))
    corrupt[len(corrupt) // 2] ^= 0xFF
    data = {
        "fm_truncated_gz": _fashion_root(root, "fm_truncated_gz", gz),
        "fm_corrupt_gz": _fashion_root(root, "fm_corrupt_gz", bytes(corrupt)),
        "fm_truncated_idx": _fashion_root(root, "fm_truncated_idx", _idx((100, 28, 28), 5000), gz=False),
        "fm_count_mismatch": _fashion_root(root, "fm_count_mismatch", gzip.compress(_idx((9, 28, 28)))),
        "fm_not_idx": _fashion_root(root, "fm_not_idx", gzip.compress(b"<html>not found</html>")),
        "empty": root / "empty_dir",
    }
    data["empty"].mkdir()
    (root / "imagefolder_without_splits" / "cats").mkdir(parents=True)
    immutable = root / "immutable"
    immutable.mkdir()
    locked = subprocess.run(["chattr", "+i", str(immutable)], capture_output=True).returncode == 0 \
        if shutil.which("chattr") else False
    yield {"root": root, "out": out, "base": base, "runs": runs, "data": data, "immutable": locked and immutable}
    if locked:
        subprocess.run(["chattr", "-i", str(immutable)], check=True)


def _cases(t: dict) -> dict[str, list[str]]:
    base, runs, data, root = t["base"], t["runs"], t["data"], t["root"]
    moco, simclr = ([*tiny_overrides(t["out"], method=m), "device=cpu"] for m in ("mocov2", "simclr"))
    fm = [*base, "data=fashion_mnist", "trainer.batch_size=2", "monitor.num_images=4"]
    cases = {
        # unknown names
        "unknown_method": [*base, "method=byol2"],
        "unknown_encoder": [*base, "encoder=resnet9000"],
        "unknown_dataset": [*base, "data=mnist"],
        "unknown_ablation": [*base, "ablation=no_everything"],
        "unknown_key": [*base, "trainer.epochz=3"],
        "added_key": [*base, "+trainer.extra=1"],
        "unknown_method_name": [*base, "method.name=nope"],
        "unknown_data_name": [*base, "data.name=nope"],
        "unknown_timm_model": [*base, "encoder=timm", "encoder.arch=resnet_18"],
        # wrong types
        "epochs_not_int": [*base, "trainer.epochs=two"],
        "epochs_float": [*base, "trainer.epochs=2.5"],
        "lr_not_number": [*base, "trainer.lr=fast"],
        "bool_not_bool": [*base, "deterministic=maybe"],
        "head_dim_string": [*base, "method.projector.hidden_dim=wide"],
        "betas_length": [*base, "trainer.betas=[0.9]"],
        "optimizer_choice": [*base, "trainer.optimizer=adam"],
        "device_choice": [*base, "device=tpu"],
        # sizes and ranges
        "batch_zero": [*base, "trainer.batch_size=0"],
        "batch_negative": [*base, "trainer.batch_size=-64"],
        "epochs_zero": [*base, "trainer.epochs=0"],
        "lr_negative": [*base, "trainer.lr=-0.1"],
        "checkpoint_every_zero": [*base, "trainer.checkpoint_every=0"],
        "width_zero": [*base, "encoder.width=0"],
        "head_dim_zero": [*base, "method.projector.hidden_dim=0"],
        "image_size_negative": [*base, "data.image_size=-16"],
        "monitor_images_zero": [*base, "monitor.num_images=0"],
        "seed_negative": [*base, "seed=-1"],
        "batch_larger_than_data": [*base, "trainer.batch_size=5000"],
        # rules across keys
        "moco_queue_not_divisible": [*moco, "trainer.batch_size=100"],
        "ablation_not_for_method": [*base, "ablation=no_centering"],
        "ablation_no_predictor_simclr": [*simclr, "ablation=no_predictor"],
        "multicrop_global_too_large": [*base, "views=multicrop", "views.base.size=32"],
        "multicrop_local_too_large": [*base, "views=multicrop", "views.crops.local.size_frac=3.0"],
        "patch_size_mismatch": [*[o for o in base if o != "encoder.width=8"], "encoder=vit_tiny", "data.image_size=18"],
        "mean_per_channel": [*base, "data.mean=[0.1,0.2,0.3]"],
        "run_name_escapes": [*base, "run_name=../elsewhere"],
        # settings the chosen parts do not read
        "data_root_digits": [*base, "data.root=/nope"],
        "data_download_fashion_mnist": [*fm, "data.download=true"],
        "data_workers_digits": [*base, "data.workers=2"],
        "data_knn_k_any_dataset": [*base, "data.knn_k=5"],
        "encoder_width_resnet": [*base, "encoder=resnet18", "encoder.width=8"],
        "encoder_cifar_stem_small_cnn": [*base, "encoder.cifar_stem=true"],
        "launcher_partition_local": [*base, "launcher.partition=gpu"],
        "method_key_of_another_method": [*base, "method.queue_size=64"],
        "unread_key_in_one_cell_of_a_sweep": ["-m", *base, "encoder=small_cnn,resnet18"],
        "unread_key_with_an_experiment": [*base, "experiment=compare_methods", "data=digits", "data.root=/nope"],
        # paths
        "data_root_missing": [*fm, f"data.root={root / 'no_such_dir'}"],
        "data_root_is_file": [*fm, f"data.root={root / 'a_file.txt'}"],
        "data_files_missing": [*fm, f"data.root={data['empty']}"],
        "imagefolder_no_root": [*base, "data=imagefolder"],
        "imagefolder_no_splits": [*base, "data=imagefolder", f"data.root={root / 'imagefolder_without_splits'}"],
        "cifar_missing": [*base, "data=cifar10", f"data.root={data['empty']}", "encoder.width=8"],
        "out_dir_under_a_file": [*base, f"out_dir={root / 'a_file.txt' / 'runs'}"],
        # dataset files
        "truncated_gz": [*fm, f"data.root={data['fm_truncated_gz']}"],
        "corrupt_gz": [*fm, f"data.root={data['fm_corrupt_gz']}"],
        "truncated_idx": [*fm, f"data.root={data['fm_truncated_idx']}"],
        "idx_count_mismatch": [*fm, f"data.root={data['fm_count_mismatch']}"],
        "not_an_idx_file": [*fm, f"data.root={data['fm_not_idx']}"],
        # run directories
        "finished_run": runs["finished"],
        "diverged_run": runs["diverged"],
        "results_unreadable": runs["results_garbage"],
        "results_wrong_types": runs["results_wrong_types"],
        "resume_other_config": [a for a in runs["other_config"] if a != "seed=1"],
        "resume_never": [*runs["never"], "resume=never"],
        "config_yaml_unreadable": runs["config_garbage"],
        "foreign_dir": [*base, "run_name=foreign"],
        "run_dir_is_file": [*base, "run_name=a_file_run"],
        "both_checkpoints_corrupt": runs["both_bad"],
        "only_checkpoint_truncated": runs["last_bad"],
        "checkpoint_bytes_flipped": runs["flipped"],
        "checkpoint_misfit": runs["misfit"],
        "checkpoint_pickled_code": runs["pickled_code"],
    }
    if t["immutable"]:
        cases["out_dir_read_only"] = [*base, f"out_dir={t['immutable']}"]
    if not torch.cuda.is_available():
        cases["cuda_without_gpu"] = [*base, "device=cuda"]
    return {name: ["train", *args] for name, args in cases.items()} | {
        "cli_unknown_verb": ["frobnicate"], "cli_unknown_flag": ["train", "--bogus"]}


def _tree(root: Path) -> dict:
    """Every path under root with its kind, size, mtime and content hash."""
    state = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha1(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns, digest)
    return state


def _check(code: int, err: str, before: dict, after: dict, name: str) -> None:
    assert code == 2, f"{name}: exit {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-zoo: error: "), f"{name}: {err}"
    assert "Traceback" not in err, f"{name}: {err}"
    assert after == before, f"{name} changed: {set(after.items()) ^ set(before.items())}"


def test_at_least_thirty_bad_inputs(tree):
    assert len(_cases(tree)) >= 30


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(tree, capfd):
    failures = []
    for name, argv in _cases(tree).items():
        before = _tree(tree["root"])
        code, err = run_main(argv, capfd)
        try:
            _check(code, err, before, _tree(tree["root"]), name)
        except AssertionError as failure:
            failures.append(str(failure))
    assert not failures, "\n".join(failures)
    assert not (tree["root"] / "pwned").exists()


@pytest.mark.slow
def test_bad_inputs_through_the_real_executable(tree):
    cases = _cases(tree)
    names = ["epochs_not_int", "both_checkpoints_corrupt", "truncated_gz"]  # a config, a run dir, a dataset
    before = _tree(tree["root"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {n: subprocess.Popen(["ssl-zoo", *cases[n]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for n in names}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        _check(proc.returncode, err, before, _tree(tree["root"]), name)


def test_a_corrupt_deflate_stream_is_a_user_error(tmp_path):
    from ssl_zoo.common.errors import UserError
    from ssl_zoo.data.datasets import read_idx

    data = bytearray(gzip.compress(_idx((10, 28, 28))))
    data[12] ^= 0x55  # the first byte of the deflate stream: zlib.error, not a gzip CRC error
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError):
        read_idx(path)


@pytest.mark.parametrize(("overrides", "says"), [
    (["data.root=/nope"], "data.root is not read by data=digits (the digits come with scikit-learn"),
    (["data=fashion_mnist", "data.download=true"], "choose a data= that reads it (cifar10, cifar100, stl10)"),
    (["data.knn_k=5"], "no dataset reads it, the kNN probe's k is eval.knn_k); remove it"),
    (["data.workers=2"], "data.workers is not read by data=digits; remove it, or choose a data= that reads it"),
    (["encoder=resnet18", "encoder.width=8"], "encoder.width is not read by encoder=resnet18"),
    (["encoder=vit_tiny", "encoder.cifar_stem=true"], "choose an encoder= that reads it (resnet18, "),
    (["launcher.partition=gpu"], "launcher.partition is not read by launcher=local; remove it, or choose a "
                                 "launcher= that reads it (slurm)"),
    (["experiment=collapse_study", "data.root=/usr/share/datasets/fashion-mnist", "data=digits"],
     "data.root is not read by data=digits"),
])
def test_a_setting_the_chosen_part_does_not_read_names_the_parts_that_do(overrides, says):
    from ssl_zoo.common.errors import UserError

    with pytest.raises(UserError) as refused:
        load_config(overrides)
    assert says in str(refused.value)


@pytest.mark.parametrize("overrides", [
    ["data=fashion_mnist", "data.root=/usr/share/datasets/fashion-mnist"],
    ["data=cifar10", "data.root=/tmp", "data.download=true"],
    ["data=imagefolder", "data.root=/tmp", "data.workers=2", "data.classes=[a,b]"],
    ["encoder=resnet18_cifar", "encoder.cifar_stem=false"],
    ["encoder=vit_tiny", "encoder.patch_size=2"],
    ["launcher=slurm", "launcher.partition=gpu", "launcher.sync_bn=true"],
    ["launcher.sync_bn=true", "data.train_subset=100", "encoder.width=8"],
    ["experiment=compare_methods", "encoder=resnet18"],  # the experiment's own encoder.width: not the user's
])
def test_settings_the_chosen_parts_read_are_accepted(overrides):
    load_config(overrides)


def test_every_unread_mark_names_a_key_its_file_sets():
    """A `# unread` line naming a key nobody sets (a misspelling) would mark nothing."""
    from omegaconf import OmegaConf

    from ssl_zoo.common.paths import conf_dir
    from ssl_zoo.config.compose import choices
    from ssl_zoo.config.read_keys import CHECKED, SHARED, option_keys

    for group in CHECKED:
        for option in choices(group):
            keys = option_keys(group, option)
            node = OmegaConf.load(conf_dir() / group / f"{option}.yaml")
            shared = OmegaConf.load(conf_dir() / SHARED[group]).get(group) if group in SHARED else {}
            for key in keys.unread:
                assert key in node or key in shared, f"{group}={option} marks {key} unread but has no {key}"
    assert "root" in option_keys("data", "fashion_mnist").reads
    assert {"root", "download", "knn_k"} <= set(option_keys("data", "digits").unread)
