"""Peak memory of a streamed 224 px training run, per monitor.num_images: host RSS of the training process and,
when CUDA is present, the most GPU memory torch allocated. With the monitors and spectra run a batch at a time the
peak should not grow with the number of monitored images.

    python benchmarks/peak_memory.py [--encoder small_cnn] [--width 8] [--monitor 1024 64] [--steps 3]
        [--batch 16] [--folder /tmp/peak_memory_images] [--out benchmarks/peak_memory.json] [-- extra overrides]

The image folder is made once by `ssl-zoo synthetic` (JPEGs 250-700 px wide, decoded by the streaming workers).
Each run is its own process, so one run's peak is not another's. Results: benchmarks/PEAK_MEMORY.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report_peak(path: Path) -> None:
    """Written at the exit of the training process: ru_maxrss of this process alone (workers are others)."""
    import torch

    peak = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak["cuda_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    path.write_text(json.dumps(peak))


def child(report: Path, argv: list[str]) -> int:
    atexit.register(_report_peak, report)
    from ssl_zoo.cli import main

    return main(argv)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.is_file() else []
    return models[0] if models else platform.processor() or platform.machine()


def make_folder(folder: Path, val_images: int) -> Path:
    if not (folder / "val").is_dir():
        classes = 10
        subprocess.run([sys.executable, "-m", "ssl_zoo.cli", "synthetic", str(folder), "--classes", str(classes),
                        "--train-per-class", "40", "--val-per-class", str(-(-val_images // classes))],
                       check=True, cwd=ROOT)
    return folder


def run(folder: Path, num_images: int, args: argparse.Namespace, out_dir: Path) -> dict:
    overrides = ["data=imagefolder", f"data.root={folder}", "data.image_size=224", f"encoder={args.encoder}",
                 f"trainer.batch_size={args.batch}", f"trainer.steps={args.steps}", "eval.enabled=false",
                 f"monitor.num_images={num_images}", "progress_bar=false", f"out_dir={out_dir}", *args.extra]
    if args.width:
        overrides.append(f"encoder.width={args.width}")
    report = out_dir / f"peak-{num_images}.json"
    start = time.perf_counter()
    # The training process imports this tree (as `python -m` from its root would), not an installed copy.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, __file__, "--child", str(report), "--", "train", *overrides], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"training failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"monitor_num_images": num_images, "seconds": round(time.perf_counter() - start, 1),
            **{k: round(v, 1) for k, v in json.loads(report.read_text()).items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--encoder", default="small_cnn")
    p.add_argument("--width", type=int, default=8, help="encoder.width (small_cnn); 0: leave it out")
    p.add_argument("--monitor", type=int, nargs="+", default=[1024, 64], help="monitor.num_images values")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "peak_memory_images")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "peak_memory.json")
    p.add_argument("extra", nargs="*", help="more overrides for `ssl-zoo train` (after --)")
    args = p.parse_args()
    if args.child is not None:
        sys.exit(child(args.child, args.extra))
    import torch

    folder = make_folder(args.folder, max(args.monitor))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(folder, n, args, Path(tmp)) for n in args.monitor]
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                          "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                          "load_before": load_before, "torch": torch.__version__},
              "settings": {"encoder": args.encoder, "width": args.width or None, "batch_size": args.batch,
                           "steps": args.steps, "image_size": 224, "extra": args.extra},
              "runs": rows}
    result["machine"]["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
