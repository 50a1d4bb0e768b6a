"""Streaming loader throughput on this CPU: ssl-zoo's streaming pipeline vs torchvision ImageFolder + PIL
RandomResizedCrop two-view DataLoader, side by side, per worker count; plus index/first-batch time and peak memory.

    OMP_NUM_THREADS=1 python benchmarks/streaming.py [--images 2000] [--workers 0 1 2] [--batches 12]
        [--small 20000] [--out benchmarks/streaming_results.json]

Both loaders do the same work per source image: read, decode the full JPEG, cut two 224 px RandomResizedCrops
(scale 0.08-1, antialiased bilinear), return uint8 tensors (the rest of the views is batched on the device in
both designs). Throughput is source images/s after the first batch (worker start-up is reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssl_zoo.data.streaming import synthetic
from ssl_zoo.data.streaming.loader import CropSpec, load_streamed

BATCH = 64
VIEWS = [CropSpec(2, 224, (0.08, 1.0), (3 / 4, 4 / 3))]  # BYOL / SimSiam: two 224 px global views


def load() -> str:
    return os.getloadavg().__repr__()


def _rate(batches) -> tuple[float, float, int]:
    """(seconds to the first batch, images/s after it, images)."""
    start = time.perf_counter()
    it = iter(batches)
    first = next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += len(b[1])
    return t0 - start, n / (time.perf_counter() - t0), n + len(first[1])


def ssl_zoo_loader(root: Path, workers: int, batches: int, cache: Path, decode: str = "cpu"):
    from omegaconf import OmegaConf

    data = load_streamed(OmegaConf.create({"root": str(root), "image_size": 224, "workers": workers,
                                           "train_subset": None, "index_dir": str(cache), "decode": decode}))
    order = torch.randperm(len(data.pretrain_rows), generator=torch.Generator().manual_seed(0)).numpy()
    return data.train_loader(VIEWS, 0, 0, order, range(batches), BATCH, 0, 1, False)


def torchvision_loader(root: Path, workers: int, batches: int):
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    one = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                              transforms.PILToTensor()])

    class TwoViews:
        def __call__(self, img):
            return torch.stack([one(img), one(img)])

    ds = ImageFolder(str(root / "train"), transform=TwoViews())
    ds = Subset(ds, torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:batches * BATCH].tolist())
    return DataLoader(ds, batch_size=BATCH, num_workers=workers, shuffle=False)  # the order is already shuffled


def _synced(batches):
    for b in batches:
        torch.cuda.synchronize()
        yield b


def throughput(root: Path, workers: list[int], batches: int, cache: Path, decode: str = "cpu") -> list[dict]:
    """data.decode=gpu (on a CUDA machine) adds an `ssl-zoo (nvjpeg)` row: crops made on the GPU, timed after a
    device sync per batch."""
    rows = []
    names = ("ssl-zoo", "torchvision") + (("ssl-zoo (nvjpeg)",) if decode == "gpu" else ())
    for w in workers:
        for name in names:
            before = load()
            if name == "torchvision":
                loader = torchvision_loader(root, w, batches)
            else:
                loader = ssl_zoo_loader(root, w, batches, cache, "gpu" if "nvjpeg" in name else "cpu")
                if "nvjpeg" in name:
                    loader = _synced(loader)
            first_s, rate, n = _rate(loader)
            row = {"loader": name, "workers": w, "images": n, "first_batch_s": round(first_s, 2),
                   "images_per_s": round(rate, 1), "load_before": before, "load_after": load()}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def startup(root: Path, cache: Path) -> dict:
    """Index build (first start), index load (second start) and the first training batch on a folder."""
    from omegaconf import OmegaConf

    node = OmegaConf.create({"root": str(root), "image_size": 64, "workers": 1, "train_subset": None,
                             "index_dir": str(cache)})
    out = {}
    for key in ("first_start_s", "second_start_s"):
        t = time.perf_counter()
        data = load_streamed(node)
        out[key] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    order = torch.randperm(len(data.pretrain_rows)).numpy()
    next(iter(data.train_loader([CropSpec(2, 64, (0.08, 1.0), (0.75, 4 / 3))], 0, 0, order, range(1), 128, 0, 1,
                                False)))
    out["first_batch_s"] = round(time.perf_counter() - t, 3)
    out["images"] = len(data.train)
    return out


def peak_rss(root: Path, cache: Path, out_dir: Path, steps: int = 20) -> dict:
    """Largest resident set of one process (trainer or worker) while `ssl-zoo train` streams the folder."""
    cmd = [sys.executable, "-c", "import resource, sys; from ssl_zoo.cli import main; code = main(sys.argv[1:]); "
           "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)",
           "train", "data=imagefolder", f"data.root={root}", f"data.index_dir={cache}", "data.image_size=32",
           "data.workers=2", "encoder=small_cnn", "encoder.width=8", "method.projector.hidden_dim=64",
           "method.predictor.hidden_dim=64", "trainer.batch_size=64", f"trainer.steps={steps}",
           "eval.enabled=false", "monitor.num_images=64", "progress_bar=false", f"out_dir={out_dir}"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    while not list(out_dir.glob("*/checkpoints/last.pt")) and proc.poll() is None:
        time.sleep(0.05)  # the step-0 checkpoint is written right before the first step
    to_first_step = time.perf_counter() - t
    stdout, stderr = proc.communicate()
    if proc.returncode:
        raise RuntimeError(stderr[-2000:])
    line = next(x for x in stdout.splitlines() if x.startswith("PEAK"))
    main_kb, child_kb = (int(v) for v in line.split()[1:])
    return {"trainer_peak_mb": round(main_kb / 1024, 1), "worker_peak_mb": round(child_kb / 1024, 1),
            "train_to_first_step_s": round(to_first_step, 1), "wall_s": round(time.perf_counter() - t, 1)}


def index_scale(tmp: Path, files: int, classes: int = 1000) -> dict:
    """Index build and reload on an ImageNet-sized listing: `files` empty .JPEG files in `classes` folders (only
    names matter to the index)."""
    root = tmp / "listing"
    t = time.perf_counter()
    for c in range(classes):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True)
        (root / "val" / f"n{c:08d}").mkdir(parents=True)
        open(root / "val" / f"n{c:08d}" / "v.JPEG", "wb").close()
        for i in range(files // classes):
            open(folder / f"n{c:08d}_{i}.JPEG", "wb").close()
    made = time.perf_counter() - t
    from omegaconf import OmegaConf

    node = OmegaConf.create({"root": str(root), "image_size": 224, "workers": 0, "train_subset": None,
                             "index_dir": str(tmp / "listing_cache")})
    out = {"files": files, "classes": classes, "created_s": round(made, 1)}
    for key in ("first_start_s", "second_start_s"):
        t = time.perf_counter()
        load_streamed(node)
        out[key] = round(time.perf_counter() - t, 3)
    out["load"] = load()
    return out


PROBE_CHILD = """
import json, resource, sys, time
import numpy as np, torch
from ssl_zoo.evaluation.probes import knn_sweep, linear_probe
train, test = np.load(sys.argv[1], mmap_mode="r"), np.load(sys.argv[2], mmap_mode="r")
labels = np.load(sys.argv[3])
train_y, test_y = torch.from_numpy(labels[:len(train)]), torch.from_numpy(labels[len(train):])
chunked = {"resident_bytes": 0} if sys.argv[4] == "chunked" else {}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
knn = knn_sweep(train, train_y, test, test_y, 10, (20, 200), (0.1,), device="cpu", **chunked)
t_knn = time.perf_counter() - t
t = time.perf_counter()
lin = linear_probe(train, train_y, test, test_y, 10, device="cpu", **chunked)
print(json.dumps({"knn_s": round(t_knn, 1), "linear_s": round(time.perf_counter() - t, 1),
                  "knn_top1": knn["k=200,T=0.1"], "linear_top1": round(lin["top1"], 2),
                  "rss_before_mb": round(base / 1024), "peak_rss_mb": round(
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def probe_scale(tmp: Path, rows: int, dim: int = 128, test: int = 5000) -> list[dict]:
    """kNN + linear probe on `rows` float16 memory-mapped features (10 noisy linear classes), in a fresh process
    each: chunked from disk (what ImageNet-size features take) and, for comparison, read whole."""
    from ssl_zoo.evaluation.feature_store import MappedRows

    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, 10, generator=torch.Generator().manual_seed(1))
    files, labels = [], []
    for name, n in (("train", rows), ("test", test)):
        out = MappedRows(n, tmp / f"probe_{rows}_{name}.npy")
        for i in range(0, n, 65536):
            x = torch.randn(min(65536, n - i), dim, generator=g)
            labels.append((x @ w + 3 * torch.randn(len(x), 10, generator=g)).argmax(1).numpy())
            out.write(x)
        out.finish()
        files.append(str(tmp / f"probe_{rows}_{name}.npy"))
    np.save(tmp / f"probe_{rows}_labels.npy", np.concatenate(labels))
    results = []
    for mode in ("chunked", "whole"):
        before = load()
        proc = subprocess.run([sys.executable, "-c", PROBE_CHILD, *files, str(tmp / f"probe_{rows}_labels.npy"), mode],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        row = {"rows": rows, "dim": dim, "test": test, "mode": mode, **json.loads(proc.stdout.splitlines()[-1]),
               "load_before": before, "load_after": load()}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="train images of the ImageNet-like folder")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=12, help="batches of 64 per measurement")
    p.add_argument("--small", type=int, default=20000, help="small images for start-up and memory; 0 skips")
    p.add_argument("--index-files", type=int, default=0, help="also time the index of this many (empty) files")
    p.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: also time data.decode=gpu (needs CUDA and torchvision's nvjpeg)")
    p.add_argument("--probe-rows", type=int, nargs="*", default=[],
                   help="also time kNN + linear probes on this many memory-mapped feature rows (e.g. 50000 400000)")
    p.add_argument("--only-probes", action="store_true", help="skip the loader, start-up and memory measurements")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("streaming_results.json"))
    args = p.parse_args()
    results: dict = {"cpu": os.cpu_count(), "torch": torch.__version__, "omp_threads": os.environ.get(
        "OMP_NUM_THREADS"), "uptime_start": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rows in args.probe_rows:
            results.setdefault("probes", []).extend(probe_scale(tmp, rows))
        if args.only_probes:
            results["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            args.out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"wrote {args.out}")
            return
        classes = [f"n{i:08d}" for i in range(20)]
        t = time.perf_counter()
        synthetic.write_folder(tmp / "big", classes, args.images // len(classes), 1, sizes=(400, 600), grain=20)
        sizes = [f.stat().st_size for f in (tmp / "big" / "train").rglob("*.JPEG")]
        results["folder"] = {"images": len(sizes), "mean_kb": round(np.mean(sizes) / 1024, 1),
                             "generated_s": round(time.perf_counter() - t, 1)}
        print(json.dumps(results["folder"]), flush=True)
        if args.index_files:
            results["index_scale"] = index_scale(tmp, args.index_files)
            print(json.dumps(results["index_scale"]), flush=True)
        results["throughput"] = throughput(tmp / "big", args.workers, args.batches, tmp / "cache", args.decode)
        if args.small:
            for n in (args.small // 10, args.small):
                folder = tmp / f"small{n}"
                synthetic.write_folder(folder, [f"c{i:03d}" for i in range(100)], n // 100, 1, sizes=(48, 96))
                row = {**startup(folder, tmp / "cache"), **peak_rss(folder, tmp / "cache", tmp / f"runs{n}")}
                row["load"] = load()
                print(json.dumps(row), flush=True)
                results.setdefault("small", []).append(row)
    results["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
