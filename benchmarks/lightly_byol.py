"""The same BYOL step fed by lightly's pipeline: the reference point for ssl-zoo's end-to-end throughput.

    python benchmarks/lightly_byol.py --workers 8,15 --json rows.jsonl     # on a GPU (needs `pip install lightly`)
    python benchmarks/lightly_byol.py --device cpu --tiny --results -      # seconds on a CPU (a smoke test)

lightly's documented recipe: `BYOLTransform` (PIL + torchvision transforms) in DataLoader workers, pinned batches
copied to the device, `BYOLProjectionHead`/`BYOLPredictionHead`, `NegativeCosineSimilarity`, `update_momentum`
with a cosine momentum schedule. Same backbone as ssl-zoo's `encoder=resnet18_cifar`, same batch, bf16 autocast,
channels_last, SGD (foreach). Two figures per worker count, in images/s (one image = its two views):
  - e2e: the DataLoader loop, after a warm-up that fills the workers' prefetch queue;
  - ceiling: the same model step on synthetic views already on the device (what the pipeline could reach).
Data: Fashion-MNIST resized once to size x size RGB PIL images (as benchmarks/throughput.py feeds ssl-zoo).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from throughput import resize_rgb  # benchmarks/ is on sys.path when run as a script
from torch import nn

from ssl_zoo.data.datasets import load_fashion_mnist
from ssl_zoo.models.encoders import _torchvision_resnet


class PILImages(torch.utils.data.Dataset):
    """uint8 [N, 3, H, W] images served as PIL images through a transform, as a torchvision dataset does."""

    def __init__(self, x: torch.Tensor, transform):
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image
        return self.transform(Image.fromarray(self.x[i])), 0


class LightlyBYOL(nn.Module):
    """lightly's BYOL example model (docs: examples/pytorch/byol.py)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, hidden: int, out: int):
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(feat_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


def load_images(n: int, size: int, fmnist_root: Path) -> tuple[torch.Tensor, str]:
    """n uint8 RGB images on the CPU, resized once as throughput.py feeds ssl-zoo."""
    try:
        x = resize_rgb(load_fashion_mnist(fmnist_root).train_x[:n], size, torch.device("cpu"))
        return x, f"Fashion-MNIST ({fmnist_root}), 28px grey -> {size}px RGB PIL"
    except Exception:  # noqa: BLE001 - any missing data: random images say so in the output
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), f"random uint8 {size}px"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="small CNN-sized batch and steps on the CPU")
    p.add_argument("--workers", default="8,15", help="comma list of DataLoader worker counts")
    p.add_argument("--batch", type=int, default=None, help="default 512 (tiny 16)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 40, tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, tiny 1)")
    p.add_argument("--fmnist-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")),
                   help="markdown file the section is appended to ('-': print only)")
    p.add_argument("--json", type=Path, default=None, help="also append one JSON line per row, as measured")
    args = p.parse_args(argv)
    try:
        import lightly
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.utils import update_momentum
        from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
        from lightly.utils.scheduler import cosine_schedule
    except ImportError as err:
        sys.exit(f"lightly_byol.py: lightly is not installed ({err}); pip install lightly")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (16 if args.tiny else 512)
    steps, warmup = args.steps or (2 if args.tiny else 40), args.warmup or (1 if args.tiny else 10)
    hidden, out = (64, 32) if args.tiny else (4096, 256)
    if cuda:
        torch.backends.cudnn.benchmark = True
    images, source = load_images(batch * (steps + warmup + 2), args.size, args.fmnist_root)
    print(f"lightly {lightly.__version__}: {source}", flush=True)

    backbone = _torchvision_resnet("resnet18", 3, cifar_stem=True)
    model = LightlyBYOL(backbone, 512, hidden, out).to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(model.parameters(), lr=0.05 * batch / 256, momentum=0.9, weight_decay=5e-4, foreach=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    total = 10_000
    state = {"step": 0}

    def step(x0: torch.Tensor, x1: torch.Tensor) -> None:
        m = cosine_schedule(state["step"], total, 0.99, 1.0)
        update_momentum(model.backbone, model.backbone_momentum, m=m)
        update_momentum(model.projection_head, model.projection_head_momentum, m=m)
        if cuda:
            x0 = x0.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            x1 = x1.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast:
            p0, z0 = model(x0), model.forward_momentum(x0)
            p1, z1 = model(x1), model.forward_momentum(x1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    # ceiling: the same step on views already on the device
    v0 = torch.randn(batch, 3, args.size, args.size, device=device)
    v1 = torch.randn_like(v0)
    for _ in range(warmup):
        step(v0, v1)
    times = []
    for _ in range(3):
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step(v0, v1)
        sync()
        times.append(time.perf_counter() - t)
    ceiling = steps * batch / statistics.median(times)
    print(f"ceiling {ceiling:.0f} images/s", flush=True)

    transform = BYOLTransform(view_1_transform=BYOLView1Transform(input_size=args.size),
                              view_2_transform=BYOLView2Transform(input_size=args.size))
    dataset = PILImages(images, transform)
    rows = []
    common = {"pipeline": f"lightly {lightly.__version__}", "batch": batch, "size": args.size, "data": source,
              "device": torch.cuda.get_device_name(device) if cuda else "CPU", "torch": torch.__version__,
              "date": str(datetime.date.today()), "ceiling": ceiling, "steps": steps}
    for workers in (int(w) for w in args.workers.split(",")):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                                             num_workers=workers, pin_memory=cuda,
                                             persistent_workers=workers > 0)
        it = iter(loader)
        for _ in range(warmup):
            (x0, x1), _ = next(it)
            step(x0, x1)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            (x0, x1), _ = next(it)
            step(x0, x1)
        sync()
        e2e = steps * batch / (time.perf_counter() - t)
        row = {**common, "workers": workers, "e2e": e2e, "ratio": e2e / ceiling}
        rows.append(row)
        print(f"workers={workers} e2e {e2e:.0f} images/s ({e2e / ceiling:.2f} of its ceiling)", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        del it, loader
    md = section(rows)
    print(md)
    if args.results != "-":
        with open(args.results, "a") as f:
            f.write(md)


def section(rows: list[dict]) -> str:
    r0 = rows[0]
    lines = [f"\n### {r0['date']} — lightly BYOL pipeline, {r0['device']}, torch {r0['torch']}\n",
             f"{r0['pipeline']}, ResNet-18 CIFAR stem, {r0['size']}px, batch {r0['batch']}, bf16 on CUDA; "
             f"{r0['steps']} timed steps after warm-up. Data: {r0['data']}.\n",
             "| pipeline | DataLoader workers | e2e images/s | ceiling images/s | e2e / ceiling |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['pipeline']} | {r['workers']} | {r['e2e']:.0f} | {r['ceiling']:.0f} | {r['ratio']:.2f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
