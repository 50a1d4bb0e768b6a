"""Generated ImageNet-like data for tests, benchmarks and the README: JPEG folders root/{train,val}/<class>/ and
the same samples as WebDataset shards.

    ssl-zoo synthetic OUT [--classes 10|imagenet100] [--train-per-class 20] [--shards DIR]

Each class has its own colour and stripe orientation (a probe can learn them), sizes vary around 500x375 and,
with --odd-files, the train split also holds the files real folders hold: grayscale, CMYK and progressive JPEGs,
a PNG named .JPEG and a corrupt file.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_zoo.data.streaming.index import IMAGE_EXTENSIONS


def imagenet100_classes() -> list[str]:
    from omegaconf import OmegaConf

    from ssl_zoo.common.paths import conf_dir

    return list(OmegaConf.load(conf_dir() / "data" / "imagenet100.yaml").classes)


def make_image(rng: np.random.Generator, label: int, num_classes: int, width: int, height: int,
               grain: float = 0.0) -> Image.Image:
    """A class-coloured striped image; `grain` adds per-pixel noise (photo-like JPEG sizes and decode cost)."""
    hue = label / max(num_classes, 1)
    base = np.array(Image.new("HSV", (1, 1), (int(255 * hue), 180, 200)).convert("RGB")).reshape(3)
    angle = np.pi * (label % 7) / 7
    yy, xx = np.mgrid[0:height // 8 + 1, 0:width // 8 + 1].astype(np.float32)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (2 + label % 3) + rng.uniform(0, 6.3))
    small = base[None, None, :] * (0.75 + 0.25 * stripes[..., None]) + rng.normal(0, 18, (*stripes.shape, 3))
    img = Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    if grain:
        noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, grain, (height, width, 3)).astype(np.float32)
        img = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    return img


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, **kw)
    return buf.getvalue()


def odd_files(rng: np.random.Generator, num_classes: int) -> dict[str, bytes]:
    """File name -> bytes of the awkward cases (class 0 unless the name says otherwise)."""
    img = make_image(rng, 0, num_classes, 320, 240)
    png = io.BytesIO()
    img.save(png, format="PNG")
    good = _jpeg(img)
    return {"odd_gray.JPEG": _jpeg(img.convert("L")), "odd_cmyk.JPEG": _jpeg(img.convert("CMYK")),
            "odd_progressive.JPEG": _jpeg(img, progressive=True), "odd_png.JPEG": png.getvalue(),
            "odd_corrupt.JPEG": good[:200] + bytes(rng.integers(0, 256, 300, dtype=np.uint8))}


def write_folder(root: Path, classes: list[str], train_per_class: int, val_per_class: int, seed: int = 0,
                 odd: bool = False, sizes: tuple[int, int] = (250, 700), grain: float = 0.0) -> Path:
    """root/{train,val}/<class>/<class>_<i>.JPEG with widths in `sizes` and heights ~ 3/4 of them (varied)."""
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w = int(rng.integers(sizes[0], sizes[1] + 1))
                h = int(np.clip(w * rng.uniform(0.6, 0.9), 16, None))
                (folder / f"{cls}_{i}.JPEG").write_bytes(_jpeg(make_image(rng, label, len(classes), w, h, grain)))
    if odd:
        for name, data in odd_files(rng, len(classes)).items():
            (root / "train" / classes[0] / name).write_bytes(data)
    return root


def folder_to_shards(root: Path, out: Path, per_shard: int = 64) -> Path:
    """The folder's samples, in its index order (sorted class, sorted file), as out/{train,val}/NNNNNN.tar with
    <key>.<ext> and <key>.cls members; labels are the class positions in train/'s sorted class folders."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    for split in ("train", "val"):
        files = [(f, label) for label, cls in enumerate(classes) if (root / split / cls).is_dir()
                 for f in sorted((root / split / cls).iterdir()) if f.name.lower().endswith(IMAGE_EXTENSIONS)]
        (out / split).mkdir(parents=True, exist_ok=True)
        for s in range(0, len(files), per_shard):
            with tarfile.open(out / split / f"{s // per_shard:06d}.tar", "w") as tar:
                for f, label in files[s:s + per_shard]:
                    key = f.stem.replace(".", "_")
                    for name, data in ((f"{key}.{f.suffix[1:].lower()}", f.read_bytes()),
                                       (f"{key}.cls", str(label).encode())):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="folder to create (train/ and val/ inside)")
    p.add_argument("--classes", default="10", help="a number of classes, or imagenet100 (its wnids)")
    p.add_argument("--train-per-class", type=int, default=20)
    p.add_argument("--val-per-class", type=int, default=5)
    p.add_argument("--odd-files", action="store_true", help="add grayscale/CMYK/progressive/PNG/corrupt files")
    p.add_argument("--shards", type=Path, default=None, help="also write the samples as WebDataset shards here")
    p.add_argument("--seed", type=int, default=0)


def generate(args: argparse.Namespace) -> None:
    if args.out.exists() and any(args.out.iterdir()):
        from ssl_zoo.common.errors import UserError

        raise UserError(f"{args.out} exists and is not empty; pick a new folder")
    classes = imagenet100_classes() if args.classes == "imagenet100" else [f"c{i:03d}"
                                                                          for i in range(int(args.classes))]
    write_folder(args.out, classes, args.train_per_class, args.val_per_class, args.seed, args.odd_files)
    if args.shards is not None:
        folder_to_shards(args.out, args.shards)
    n = len(classes) * (args.train_per_class + args.val_per_class)
    print(f"wrote {n} images in {len(classes)} classes to {args.out}" +
          (f" and shards to {args.shards}" if args.shards else ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    generate(p.parse_args(argv))


if __name__ == "__main__":
    main()
