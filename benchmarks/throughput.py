"""Training throughput: the model-step ceiling vs end to end (augmentation + step), per method and encoder.

    python benchmarks/throughput.py                           # on a GPU: ResNet-18 32px b512 and ResNet-50 224px b128
    python benchmarks/throughput.py --device cpu --tiny       # seconds on a CPU (tests/test_throughput_script.py)
    python benchmarks/throughput.py --from-json rows.jsonl    # the section for rows a GPU machine saved (--json)

For every (setup, method) it builds the real `Trainer` and measures, in images/s (one image = its two views or
its multi-crop set):
  (a) ceiling: `Trainer._train_step` on synthetic views already on the device (no augmentation, no indexing),
      eager (bf16 autocast on CUDA) and with `trainer.compile=true`;
  (b) end to end: `Trainer._run_epoch` on real images held on the device, i.e. batch gather + views + step +
      the loop's periodic loss check, eager and compiled; on CUDA also compiled without the side-stream
      prefetch of the next batch's views.
Timing: synchronised, after one warm-up epoch (compilation, cudnn autotuning), median over --repeats epochs of
--steps steps. The ratio b/a is end to end (compiled, as the trainer runs it) over the compiled ceiling.
Data: CIFAR-10 under --data-root if present, else Fashion-MNIST (--fmnist-root) replicated to 3 channels and
resized, else random uint8 images; the output says which. Appends a section to --results (a markdown file).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ssl_zoo.common.errors import UserError
from ssl_zoo.config.load import load_config
from ssl_zoo.data.datasets import ImageData, load_fashion_mnist, load_torchvision_data
from ssl_zoo.train.build import build_trainer
from ssl_zoo.train.trainer import Trainer

# setup name -> encoder overrides, image side, batch size, steps per timed epoch
SETUPS = {
    "r18": {"encoder": ["encoder=resnet18_cifar"], "size": 32, "batch": 512, "steps": 20},
    "r50": {"encoder": ["encoder=resnet50"], "size": 224, "batch": 128, "steps": 10},
}
TINY_SETUPS = {  # CPU stand-ins with the same structure: two image sizes, small CNN, small batches
    "r18": {"encoder": ["encoder=small_cnn", "encoder.width=8"], "size": 16, "batch": 16, "steps": 1},
    "r50": {"encoder": ["encoder=small_cnn", "encoder.width=8"], "size": 24, "batch": 8, "steps": 1},
}
CPU_SETUPS = {  # --setups cnn: the CPU-sized encoder of the quick start, for a moderate CPU measurement
    "cnn": {"encoder": ["encoder=small_cnn"], "size": 32, "batch": 128, "steps": 4},
}
METHODS = ("byol", "simsiam", "mocov2", "dino")  # each with its shipped default views (DINO: 2 global + 6 local)
SMALL_HEADS = {
    "byol": ["method.projector.hidden_dim=64", "method.projector.out_dim=32", "method.predictor.hidden_dim=64",
             "method.predictor.out_dim=32"],
    "simsiam": ["method.projector.hidden_dim=64", "method.projector.out_dim=32", "method.predictor.hidden_dim=64",
                "method.predictor.out_dim=32"],
    "mocov2": ["method.projector.hidden_dim=64", "method.projector.out_dim=32", "method.queue_size=256"],
    "dino": ["method.head.hidden_dim=64", "method.head.out_dim=32", "method.head.num_prototypes=64"],
}
# The issue's targets for end to end / compiled ceiling (none stated for SimSiam and MoCo v2 at ResNet-18).
TARGETS = {("r18", "byol"): 0.9, ("r18", "dino"): 0.8, ("r50", "byol"): 0.8, ("r50", "simsiam"): 0.8,
           ("r50", "mocov2"): 0.8, ("r50", "dino"): 0.8}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resize_rgb(x: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """uint8 [N, C, h, w] -> uint8 [N, 3, size, size] on device (antialiased bilinear, grey replicated)."""
    out = torch.empty(len(x), 3, size, size, dtype=torch.uint8, device=device)
    for i in range(0, len(x), 1024):
        y = x[i:i + 1024].to(device).float()
        if y.shape[-1] != size:
            y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i:i + 1024] = y.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    return out


def load_images(n: int, size: int, data_root: Path | None, fmnist_root: Path | None,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n real images at size x size RGB (see the module doc for the fallbacks) and their labels."""
    if data_root is not None:
        try:
            data = load_torchvision_data("cifar10", data_root, download=False)
            x, y = data.train_x[:n], data.train_y[:n]
            if len(x) == n:
                return resize_rgb(x, size, device), y.to(device), f"CIFAR-10 ({data_root}), 32px -> {size}px"
        except UserError:
            pass
    if fmnist_root is not None:
        try:
            data = load_fashion_mnist(fmnist_root)
            x, y = data.train_x[:n], data.train_y[:n]
            if len(x) == n:
                return (resize_rgb(x, size, device), y.to(device),
                        f"Fashion-MNIST ({fmnist_root}), 28px grey -> {size}px, 3 channels")
        except UserError:
            pass
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return x.to(device), torch.randint(0, 10, (n,), generator=g).to(device), f"random uint8 {size}px"


def bench_config(method: str, setup: dict, args, epochs: int, out_dir: str) -> DictConfig:
    return load_config([f"method={method}", "data=cifar10", f"data.image_size={setup['size']}", *setup["encoder"],
                        f"trainer.batch_size={setup['batch']}", f"trainer.epochs={epochs}", f"device={args.device}",
                        "progress_bar=false", "eval.enabled=false", f"out_dir={out_dir}",
                        f"trainer.compile_mode={args.compile_mode}",
                        *(SMALL_HEADS[method] if args.tiny else [])])


def make_trainer(cfg: DictConfig, compile_: bool, images: torch.Tensor, labels: torch.Tensor) -> Trainer:
    cfg = copy.deepcopy(cfg)
    cfg.trainer.compile = compile_
    data = ImageData(images, labels, images[:8], labels[:8], 10)
    return build_trainer(cfg, data, Path(str(cfg.out_dir)) / "unused")


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of fn() over repeats, after one warm-up call, with the device synchronised."""
    sync(device)
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(tr: Trainer, args, prefetch_variants: tuple[bool, ...]) -> dict[str, float]:
    """images/s of the ceiling and of end to end (per prefetch variant) on one trainer."""
    steps, images = tr.steps_per_epoch, tr.steps_per_epoch * tr.batch_size
    x, y = tr.pretrain.images[:tr.batch_size], tr.pretrain.labels[:tr.batch_size]
    synthetic = [torch.randn_like(v) for v in tr._make_views(x, 0)]  # same shapes and memory format

    def ceiling_epoch() -> None:
        tr.method.train()
        for _ in range(steps):
            tr._train_step(None, y, synthetic)

    out = {"ceiling": images / timed(ceiling_epoch, tr.device, args.repeats)}
    for prefetch in prefetch_variants:
        tr.prefetch_views = prefetch
        out[f"e2e_prefetch{int(prefetch)}"] = images / timed(
            lambda: tr._run_epoch(tr.step // tr.steps_per_epoch), tr.device, args.repeats)
    return out


def profile_epoch(tr: Trainer, path: Path) -> None:
    """One end-to-end epoch under torch.profiler: the top ops by device (or CPU) time, as a text table."""
    from torch.profiler import ProfilerActivity, profile
    cuda = tr.device.type == "cuda"
    sync(tr.device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        tr._run_epoch(tr.step // tr.steps_per_epoch)
        sync(tr.device)
    table_ = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                       row_limit=40, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{tr.steps_per_epoch} steps of batch {tr.batch_size}\n{table_}")


def run_one(name: str, method: str, setup: dict, args, images: torch.Tensor, labels: torch.Tensor,
            out_dir: str) -> dict:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    epochs = 4 * (args.repeats + 1) + 2  # enough schedule for every timed epoch (progress stays < 1)
    row: dict = {"setup": name, "method": method, "batch": setup["batch"], "size": setup["size"],
                 "compile_mode": args.compile_mode}
    cfg = bench_config(method, setup, args, epochs, out_dir)
    for compile_ in ((True,) if args.compiled_only else (False, True)) if args.compile else (False,):
        torch._dynamo.reset()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        tr = make_trainer(cfg, compile_, images, labels)
        row["views"] = " + ".join(f"{r.n}x{r.size}" for r in tr.views.recipes)
        row["encoder"] = str(tr.cfg.encoder.arch)
        # On CUDA the trainer prefetches views on a side stream; the compiled pass also times it switched off.
        variants = (True, False) if cuda and compile_ else (tr.prefetch_views,)
        res = measure(tr, args, variants)
        tag = "compiled" if compile_ else "eager"
        if args.profile and compile_ == args.compile:  # the variant the ratio is taken of
            profile_epoch(tr, args.profile / f"profile_{name}_{method}_{tag}.txt")
        row[f"ceiling_{tag}"] = res["ceiling"]
        row[f"e2e_{tag}"] = res[f"e2e_prefetch{int(tr.device.type == 'cuda')}"]
        if cuda and compile_:
            row["e2e_compiled_no_prefetch"] = res["e2e_prefetch0"]
        row[f"peak_gib_{tag}"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
        print(f"  {name} {method} {tag}: " + ", ".join(f"{k} {v:.0f}" for k, v in res.items()) + " images/s",
              flush=True)  # as measured: a run cut short during the next compile still shows these
        del tr
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    best = "compiled" if args.compile else "eager"
    row["ratio"] = row[f"e2e_{best}"] / row[f"ceiling_{best}"]
    row["ratio_of"] = best
    row["target"] = None if args.tiny else TARGETS.get((name, method))
    return row


def fmt(v, spec: str = ".0f") -> str:
    return "–" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    head = ("| setup | encoder | method | views | batch | ceiling eager | ceiling compiled | e2e eager | "
            "e2e compiled | e2e compiled, no side stream | ratio e2e/ceiling | target | peak GiB eager / compiled |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        target = "–" if r["target"] is None else f"≥ {r['target']:.2f} ({'met' if r['ratio'] >= r['target'] else 'NOT met'})"
        lines.append(
            f"| {r['setup']} {r['size']}px | {r['encoder']} | {r['method']} | {r['views']} | {r['batch']} | "
            f"{fmt(r.get('ceiling_eager'))} | {fmt(r.get('ceiling_compiled'))} | {fmt(r.get('e2e_eager'))} | "
            f"{fmt(r.get('e2e_compiled'))} | {fmt(r.get('e2e_compiled_no_prefetch'))} | "
            f"{r['ratio']:.2f} ({r['ratio_of']}) | {target} | "
            f"{fmt(r.get('peak_gib_eager'), '.1f')} / {fmt(r.get('peak_gib_compiled'), '.1f')} |")
    return head + "\n".join(lines) + "\n"


def device_line(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    n = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {n} thread{'s' if n > 1 else ''}"


def section(rows: list[dict], note: str = "") -> str:
    """The markdown section for rows measured in one or more runs on one machine."""
    first = rows[0]
    sources = dict.fromkeys(f"{r['setup']}: {r['data']}" for r in rows)
    steps = ", ".join(dict.fromkeys(f"{r['setup']} {r['steps']} steps" for r in rows))
    mode = ", ".join(dict.fromkeys(r.get("compile_mode", "default") for r in rows if "ceiling_compiled" in r))
    modes = f" Compiled = trainer.compile_mode={mode}." if mode else ""
    return (f"\n## {first['date']} — {first['device']}, torch {first['torch']}{' (--tiny)' if first['tiny'] else ''}\n\n"
            f"images/s (one image = its views); median of {first['repeats']} epochs ({steps}) after 1 warm-up "
            f"epoch; bf16 autocast on CUDA, fp32 on CPU. Data: {'; '.join(sources)}.{modes}\n"
            + (f"\n{note}\n" if note else "") + "\n" + table(rows))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="small CNN, small images and batches, 1 step (CPU tests)")
    p.add_argument("--setups", default="r18,r50",
                   help="comma list of r18 (ResNet-18 CIFAR stem, 32px, b512), r50 (ResNet-50, 224px, b128), "
                        "cnn (small_cnn, 32px, b128: a moderate CPU size)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per measurement (default 5, tiny 2)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed epoch (default per setup)")
    p.add_argument("--batch", type=int, default=None, help="override the setups' batch size")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure trainer.compile=true (default: on CUDA only)")
    p.add_argument("--compile-mode", default="default",
                   choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="trainer.compile_mode of the compiled pass")
    p.add_argument("--compiled-only", action="store_true", help="skip the eager pass (with --compile)")
    p.add_argument("--data-root", type=Path, default=None, help="a torchvision CIFAR-10 root")
    p.add_argument("--fmnist-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")),
                   help="markdown file the section is appended to ('-': print only)")
    p.add_argument("--json", type=Path, default=None, help="also append one JSON line per row here, as measured")
    p.add_argument("--from-json", type=Path, nargs="+", default=None,
                   help="measure nothing: write the section for rows saved by --json (e.g. from a GPU machine)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: torch's; --tiny: 1, as 2 threads on shared cores spin-wait)")
    p.add_argument("--profile", type=Path, default=None,
                   help="folder for a torch.profiler table of one end-to-end epoch per row (what to fix next)")
    p.add_argument("--note", default="", help="a line added under the section header (e.g. the machine's load)")
    args = p.parse_args(argv)
    if args.from_json:
        rows = [json.loads(line) for path in args.from_json for line in path.read_text().splitlines() if line]
    else:
        rows = measure_all(args)
    md = section(rows, args.note)
    print(md)
    if args.results != "-":
        with open(args.results, "a") as f:
            f.write(md)


def measure_all(args) -> list[dict]:
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("throughput.py: --device cuda but no CUDA device is visible (use --device cpu)")
    args.repeats = args.repeats or (2 if args.tiny else 5)
    args.compile = args.device == "cuda" if args.compile is None else args.compile
    if args.threads or args.tiny:
        torch.set_num_threads(args.threads or 1)
    device = torch.device(args.device)
    setups = TINY_SETUPS if args.tiny else {**SETUPS, **CPU_SETUPS}
    common = {"device": device_line(device), "torch": torch.__version__, "date": str(datetime.date.today()),
              "tiny": args.tiny, "repeats": args.repeats}
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.setups.split(","):
            setup = dict(setups[name])
            setup["batch"] = args.batch or setup["batch"]
            setup["steps"] = args.steps or setup["steps"]
            images, labels, source = load_images(setup["batch"] * setup["steps"], setup["size"],
                                                 args.data_root, args.fmnist_root, device)
            print(f"{name}: {source}", flush=True)
            for method in args.methods.split(","):
                row = {**run_one(name, method, setup, args, images, labels, out_dir), "steps": setup["steps"],
                       "data": source, **common}
                rows.append(row)
                print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
                if args.json:  # row by row: a run cut short still leaves what it measured
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
            del images, labels
    return rows


if __name__ == "__main__":
    main()
