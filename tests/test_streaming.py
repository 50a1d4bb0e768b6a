"""Streaming image folders and WebDataset shards (ssl_zoo.data.streaming): index, decoding, deterministic batches."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from ssl_zoo.common.errors import UserError
from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.bad_samples import BadSampleLog
from ssl_zoo.data.streaming.decode import decode_rgb, resized_crop
from ssl_zoo.data.streaming.index import load_index
from ssl_zoo.data.streaming.loader import CropSpec, load_streamed
from ssl_zoo.data.streaming.sampling import center_crop_box, resized_crop_box

CLASSES = ["c000", "c001", "c002"]
SPECS = [CropSpec(1, 32, (0.08, 1.0), (3 / 4, 4 / 3)), CropSpec(2, 16, (0.05, 0.4), (3 / 4, 4 / 3))]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    synthetic.write_folder(root / "folder", CLASSES, 6, 2, odd=True, sizes=(60, 160))
    synthetic.folder_to_shards(root / "folder", root / "shards", per_shard=7)
    return root


def _data(root, fmt="folder", workers=0, **extra):
    node = {"root": str(root), "format": fmt, "image_size": 32, "workers": workers, "train_subset": None,
            "max_bad_fraction": 0.2, "index_dir": str(root.parent / "index_cache"), **extra}
    return load_streamed(OmegaConf.create(node))


def _epoch(data, epoch=0, batches=range(3), batch_size=4, rank=0, world=1, seed=0):
    order = np.random.default_rng(epoch).permutation(len(data.pretrain_rows))
    return list(data.train_loader(SPECS, seed, epoch, order, batches, batch_size, rank, world, False))


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and torch.equal(a[1], b[1])


def test_index_is_cached_memory_mapped_and_rebuilt_when_a_class_folder_changes(tmp_path):
    synthetic.write_folder(tmp_path / "d", CLASSES, 3, 1, sizes=(40, 60))
    cache = tmp_path / "cache"
    first = load_index(tmp_path / "d" / "train", "folder", cache, CLASSES)
    again = load_index(tmp_path / "d" / "train", "folder", cache, CLASSES)
    assert isinstance(again.rows, np.memmap) and not isinstance(first.rows, np.memmap)
    assert np.array_equal(first.rows, again.rows) and len(first) == 9
    assert again.file_path(4).name == "c001_1.JPEG" and int(again.rows["label"][4]) == 1
    time.sleep(0.01)  # a new mtime for the class folder
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "train" / "c002" / "extra.jpg")
    rebuilt = load_index(tmp_path / "d" / "train", "folder", cache, CLASSES)
    assert len(rebuilt) == 10 and not isinstance(rebuilt.rows, np.memmap)


def test_folder_and_shards_give_the_same_samples(data_root):
    folder, shards = _data(data_root / "folder"), _data(data_root / "shards", "webdataset")
    assert len(folder.train) == len(shards.train) == 3 * 6 + 5 and folder.num_classes == shards.num_classes == 3
    assert torch.equal(folder.train_y, shards.train_y) and torch.equal(folder.test_y, shards.test_y)
    for a, b in zip(_epoch(folder), _epoch(shards)):
        assert _same(a, b) and [e[0] for e in a[2]] == [e[0] for e in b[2]]
    assert torch.equal(folder.test_x.to("cpu"), shards.test_x.to("cpu"))


def test_odd_files_decode_to_rgb_and_a_corrupt_one_is_replaced(data_root):
    folder = data_root / "folder" / "train" / "c000"
    for name in ("odd_gray", "odd_cmyk", "odd_progressive", "odd_png"):
        img = decode_rgb((folder / f"{name}.JPEG").read_bytes())
        assert img.mode == "RGB" and img.size == (320, 240), name
    with pytest.raises(OSError):
        decode_rgb((folder / "odd_corrupt.JPEG").read_bytes())
    data = _data(data_root / "folder")
    everything = _epoch(data, batches=range(5), batch_size=4)  # 20 of the 23 samples
    bad = [e for batch in everything for e in batch[2]]
    order = np.random.default_rng(0).permutation(len(data.pretrain_rows))[:20]
    corrupt = next(i for i in range(len(data.train)) if data.train.file_path(i).name == "odd_corrupt.JPEG")
    assert [e[0] for e in bad] == ([corrupt] if corrupt in order else [])
    assert all(e[1].endswith("odd_corrupt.JPEG") and "Error" in e[2] for e in bad)
    again = _epoch(data, batches=range(5), batch_size=4)  # the replacement is the same every time
    assert all(_same(a, b) for a, b in zip(everything, again))


def test_batches_are_identical_for_0_and_2_workers_and_differ_across_epochs(data_root):
    zero, two = _data(data_root / "folder", workers=0), _data(data_root / "folder", workers=2)
    a, b = _epoch(zero, epoch=1), _epoch(two, epoch=1)
    assert all(_same(x, y) for x, y in zip(a, b))
    c = _epoch(zero, epoch=2)
    assert not _same(a[0], c[0])


def test_a_resumed_epoch_replays_the_remaining_batches(data_root):
    data = _data(data_root / "folder")
    whole, tail = _epoch(data, batches=range(5)), _epoch(data, batches=range(2, 5))
    assert all(_same(x, y) for x, y in zip(whole[2:], tail))


def test_ddp_ranks_read_disjoint_parts_that_make_up_the_global_batch(data_root):
    data = _data(data_root / "folder")
    single = _epoch(data, batch_size=6, world=1)
    ranks = [_epoch(data, batch_size=3, rank=r, world=2) for r in (0, 1)]
    for i, whole in enumerate(single):
        labels = torch.cat([ranks[0][i][1], ranks[1][i][1]])
        assert torch.equal(labels, whole[1])
        # crop j of recipe k of sample s sits at row j*B + s: rank r holds samples r*3 .. r*3+2 of each crop
        for k, spec in enumerate(SPECS):
            for j in range(spec.n):
                parts = [ranks[r][i][0][k][j * 3:(j + 1) * 3] for r in (0, 1)]
                assert torch.equal(torch.cat(parts), whole[0][k][j * 6:(j + 1) * 6])


def test_pre_cropped_views_shard_over_ranks_like_whole_images():
    from ssl_zoo.config.load import load_config
    from ssl_zoo.data.views import build_view_maker
    from ssl_zoo.train.ddp import shard_views

    cfg = load_config(["data=imagefolder", "data.root=/unused", "views=multicrop", "data.image_size=32"])
    maker = build_view_maker(cfg.views, list(cfg.data.mean), list(cfg.data.std))
    b, world = 4, 2
    crops = [torch.randint(0, 256, (r.n * b * world, 3, r.size, r.size), dtype=torch.uint8) for r in maker.recipes]
    full = maker(crops, torch.Generator().manual_seed(3))
    assert [v.shape[-1] for v in full] == [32, 32, *[16] * 6]

    def rows(c, n, r):  # rank r's samples of every crop j (crop-major layout)
        return torch.cat([c[j * b * world + r * b:j * b * world + (r + 1) * b] for j in range(n)])

    parts = [shard_views(maker, [rows(c, rec.n, r) for c, rec in zip(crops, maker.recipes)],
                         torch.Generator().manual_seed(3), r, world) for r in range(world)]
    for v, view in enumerate(full):
        assert torch.equal(torch.cat([p[v] for p in parts]), view), v


def test_crop_boxes_follow_random_resized_crop_and_resize_matches_torchvision():
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(0)
    areas = []
    for _ in range(300):
        left, top, right, bottom = resized_crop_box(500, 375, (0.08, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375
        areas.append((right - left) * (bottom - top) / (500 * 375))
    assert min(areas) >= 0.07 and max(areas) > 0.8
    img = synthetic.make_image(rng, 1, 3, 500, 375)
    box = (40, 30, 340, 255)
    ours = resized_crop(img, box, 64)
    ref = np.asarray(TF.resized_crop(img, 30, 40, 225, 300, [64, 64], antialias=True))
    # equal inside; on the border ours reads the real neighbours of the box where crop-then-resize clamps
    assert np.array_equal(ours[1:-1, 1:-1], ref[1:-1, 1:-1])
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 4
    centre = np.asarray(TF.center_crop(TF.resize(img, 73), [64, 64]))  # resize the shorter side, centre crop
    assert np.abs(resized_crop(img, center_crop_box(500, 375, 64, 73), 64).astype(int) - centre).max() <= 1


def test_too_many_bad_samples_stop_with_one_line(tmp_path):
    log = BadSampleLog(tmp_path, dataset_size=100, max_fraction=0.02)
    log.add([(3, "a.jpg", "OSError: broken\nsecond line"), (3, "a.jpg", "again")])
    log.add([(5, "b.jpg", "x")])
    assert (tmp_path / "bad_samples.txt").read_text().splitlines() == ["3\ta.jpg\tOSError: broken second line",
                                                                      "5\tb.jpg\tx"]
    with pytest.raises(UserError, match="3 of 100 samples could not be read"):
        log.add([(9, "c.jpg", "x")])
    assert len(BadSampleLog(tmp_path, 100, 0.02).seen) == 3  # a resumed run does not list them again


def _bad_layout(root, case):
    d = root / case
    if case == "no_val":
        synthetic.write_folder(d, CLASSES, 1, 0, sizes=(20, 30))
        for c in CLASSES:
            (d / "val" / c).rmdir()
        (d / "val").rmdir()
    elif case == "val_class_not_in_train":
        synthetic.write_folder(d, CLASSES, 1, 1, sizes=(20, 30))
        (d / "val" / "stranger").mkdir()
    elif case == "empty_class":
        synthetic.write_folder(d, CLASSES, 1, 1, sizes=(20, 30))
        (d / "train" / "c003").mkdir()
    elif case == "no_class_folders":
        (d / "train").mkdir(parents=True)
        (d / "val").mkdir()
    elif case == "shards_without_cls":
        synthetic.write_folder(d / "src", CLASSES, 1, 1, sizes=(20, 30))
        synthetic.folder_to_shards(d / "src", d)
        import tarfile
        with tarfile.open(d / "train" / "000000.tar", "w") as tar:
            tar.add(next((d / "src" / "train" / "c000").iterdir()), arcname="k1.jpg")
    elif case == "no_shards":
        (d / "train").mkdir(parents=True)
        (d / "val").mkdir()
    return d


@pytest.mark.parametrize("case,fmt,message", [
    ("no_val", "folder", "needs val/"),
    ("val_class_not_in_train", "folder", "'stranger' that train/ lacks"),
    ("empty_class", "folder", "has no images"),
    ("no_class_folders", "folder", "has no class folders"),
    ("shards_without_cls", "webdataset", "has no .cls member"),
    ("no_shards", "webdataset", "has no .tar shards"),
])
def test_bad_layouts_are_one_line_user_errors(tmp_path, case, fmt, message):
    with pytest.raises(UserError, match=message) as err:
        _data(_bad_layout(tmp_path, case), fmt)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_root_is_a_user_error(tmp_path):
    d = _bad_layout(tmp_path, "empty_class")
    os.chmod(d / "train", 0)
    try:
        with pytest.raises(UserError, match="cannot read"):
            _data(d)
    finally:
        os.chmod(d / "train", 0o755)


def test_eval_images_are_the_same_decoded_in_workers_or_in_process(tmp_path):
    synthetic.write_folder(tmp_path / "d", ["a", "b"], 40, 1, sizes=(20, 40))
    in_process, in_workers = _data(tmp_path / "d", workers=0), _data(tmp_path / "d", workers=2)
    x = in_process.train_x[:70].to("cpu")  # > 64 images: the workers' path when there are workers
    assert x.shape == (70, 3, 32, 32) and torch.equal(x, in_workers.train_x[:70].to("cpu"))
    assert torch.equal(torch.cat(list(in_workers.train_x.batches(16))), in_process.train_x.to("cpu"))
