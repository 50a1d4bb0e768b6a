"""Exporting a run's ONLINE backbone so it can leave ssl-zoo: weights + a model card, nothing else.

`<out>/backbone.safetensors` holds the backbone's state_dict under the encoder library's own module names
(torchvision / timm; small_cnn under ssl_zoo's), so `load_state_dict` into a freshly created model of that library
matches key for key. `<out>/card.json` says how to create that model (library, arch, keyword arguments, in_chans,
CIFAR stem), the input it expects (image size, mean, std), the feature dimension, the checkpoint's step, the
weights' sha256, the probe results and the resolved config.

safetensors rather than torch.save: loading it runs no pickled code, it is memory-mapped, and it is the format
timm and the Hugging Face hub read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from ssl_zoo.common.errors import UserError
from ssl_zoo.models.encoders import SmallCNN, library, timm_kwargs
from ssl_zoo.runs.atomic import fsync_dir
from ssl_zoo.runs.checkpoint import find_checkpoint

CARD_FORMAT = "ssl-zoo backbone card 1"
WEIGHTS, CARD = "backbone.safetensors", "card.json"
# results.json keys copied onto the card: the headline numbers, not the sweeps
RESULT_KEYS = ("status", "knn_top1", "knn_k", "knn_t", "linear_top1", "linear_top5", "evaluated_step", "finetune")


def backbone_state(method_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The online backbone's tensors from a method state_dict: the `backbone.` prefix stripped. Momentum and
    teacher copies live under other prefixes (target., teacher., key_encoder.) and are left out."""
    state = {k[len("backbone."):]: v.detach().cpu().contiguous().clone()
             for k, v in method_state.items() if k.startswith("backbone.")}
    if not state:
        raise UserError("the checkpoint has no backbone.* weights; it is not an ssl-zoo method checkpoint")
    return state


def model_spec(cfg: DictConfig) -> dict:
    """How to create an empty model that the exported weights fit: library, arch and keyword arguments."""
    enc, in_chans, size = cfg.encoder, int(cfg.data.channels), int(cfg.data.image_size)
    lib = library(enc)
    spec = {"library": lib, "arch": str(enc.arch), "in_chans": in_chans, "cifar_stem": bool(enc.cifar_stem)}
    if lib == "timm":
        spec["kwargs"] = timm_kwargs(enc, in_chans, size)
    elif lib == "ssl_zoo":
        spec["kwargs"] = {"in_chans": in_chans, "width": int(enc.width or 32)}
    return spec


def create_model(card: dict) -> nn.Module:
    """An empty backbone as the card describes it, built with the library's own constructor (what the
    load snippet on the card does)."""
    lib, arch = card["library"], card["arch"]
    if lib == "timm":
        import timm

        return timm.create_model(arch, **card["kwargs"])
    if lib == "ssl_zoo":
        return SmallCNN(**card["kwargs"])
    import torchvision

    net = getattr(torchvision.models, arch)()
    net.fc = nn.Identity()  # the backbone ends at the pooled features
    in_chans = int(card["in_chans"])
    if card["cifar_stem"]:  # 3x3 stride-1 stem without max-pool for small images
        net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
    return net


def load_snippet(card: dict, weights: str = WEIGHTS) -> str:
    """Python lines that load the export into a fresh model of its library (printed and put on the card)."""
    lib, arch = card["library"], card["arch"]
    load = f'net.load_state_dict(load_file("{weights}"))'
    if lib == "timm":
        args = "".join(f", {k}={v!r}" for k, v in card["kwargs"].items())
        return (f"import timm\nfrom safetensors.torch import load_file\n"
                f'net = timm.create_model("{arch}"{args})\n{load}')
    if lib == "ssl_zoo":
        args = ", ".join(f"{k}={v!r}" for k, v in card["kwargs"].items())
        return (f"from safetensors.torch import load_file\nfrom ssl_zoo.models.encoders import SmallCNN\n"
                f"net = SmallCNN({args})\n{load}")
    lines = ["import torch, torchvision", "from safetensors.torch import load_file",
             f"net = torchvision.models.{arch}(); net.fc = torch.nn.Identity()"]
    c = int(card["in_chans"])
    if card["cifar_stem"]:
        lines.append(f"net.conv1 = torch.nn.Conv2d({c}, 64, 3, 1, 1, bias=False); net.maxpool = torch.nn.Identity()")
    elif c != 3:
        lines.append(f"net.conv1 = torch.nn.Conv2d({c}, 64, 7, 2, 3, bias=False)")
    return "\n".join([*lines, load])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_fits(card: dict, state: dict[str, torch.Tensor]) -> int:
    """Loads the weights into a freshly created model (strict) and returns its feature dimension: the card
    is never written unless its own recipe works."""
    net = create_model(card)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"the backbone does not fit a fresh {card['library']} {card['arch']} "
                        f"({str(err).splitlines()[0]})") from err
    net.eval()
    size = int(card["input"]["image_size"])
    with torch.no_grad():
        return int(net(torch.zeros(2, int(card["in_chans"]), size, size)).shape[-1])


def _finish_file(path: Path) -> None:
    """fsync'd, and readable as the umask allows (safetensors writes through a private temp file)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def export_run(run_dir: Path, out: Path | None = None) -> Path:
    """Writes <out>/backbone.safetensors and <out>/card.json (default out: <run_dir>/export) and returns out.
    Refuses (UserError, nothing written) a folder that is not a run, a run without a checkpoint and an
    existing out."""
    from ssl_zoo.launch.run_eval import load_run_config
    from ssl_zoo.runs.results_file import results_or_problem
    from ssl_zoo.runs.verb_output import check_output_folder

    run_dir = Path(run_dir).expanduser()
    cfg = load_run_config(run_dir)
    out = Path(out).expanduser() if out is not None else run_dir / "export"
    if out.exists():
        raise UserError(f"{out} already exists; it is never overwritten (remove it or pass --out <new folder>)")
    check_output_folder(out.parent, "--out")  # no file on its path, writable: before the checkpoint is read
    found = find_checkpoint(run_dir)
    if found is None:
        raise UserError(f"{run_dir} has no checkpoint yet (checkpoints/last.pt): nothing to export")
    ckpt, ckpt_path = found
    state = backbone_state(ckpt["method"])
    rows = ckpt.get("rows") if isinstance(ckpt.get("rows"), list) else []
    epoch = rows[-1].get("epoch") if rows and isinstance(rows[-1], dict) else 0
    card = {"format": CARD_FORMAT, **model_spec(cfg),
            "input": {"image_size": int(cfg.data.image_size), "mean": list(cfg.data.mean),
                      "std": list(cfg.data.std), "channels": int(cfg.data.channels)}}
    card["feat_dim"] = _check_fits(card, state)
    results, problem = results_or_problem(run_dir)
    if problem:  # the weights are still good: exported, with the card saying it carries no results
        print(f"ssl-zoo: skipped {problem} (the card carries no probe results)", file=sys.stderr, flush=True)
    results = results or {}
    card.update({
        "weights": WEIGHTS,
        "step": int(ckpt["step"]), "epoch": int(epoch) if isinstance(epoch, int | float) else 0,
        "checkpoint": str(ckpt_path.relative_to(run_dir)),
        "run": {"dir": str(run_dir.resolve()), "method": str(cfg.method.name),
                "ablation": str(OmegaConf.select(cfg, "ablation.name", default="none")),
                "data": str(cfg.data.name), "encoder": str(cfg.encoder.name), "seed": int(cfg.seed)},
        "results": {k: results[k] for k in RESULT_KEYS if k in results},
        "load": load_snippet(card),
        "config": OmegaConf.to_container(cfg, resolve=True),
    })
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        _finish_file(tmp / WEIGHTS)
        card["sha256"] = _sha256(tmp / WEIGHTS)
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        _finish_file(tmp / CARD)
        os.rename(tmp, out)  # the folder appears whole or not at all
        fsync_dir(out.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {out}: {err.strerror or err}") from err
    return out


def read_card(path: Path) -> dict:
    """The card of an export folder (or of the folder holding card.json)."""
    folder = Path(path).expanduser()
    card_path = folder / CARD if folder.is_dir() else folder
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{card_path} is not a readable ssl-zoo export card ({type(err).__name__})") from err
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise UserError(f"{card_path} is not an ssl-zoo export card (format {found!r})")
    return card


def load_exported(path: Path) -> nn.Module:
    """The exported backbone, created from its card and loaded (strict), in eval mode."""
    folder = Path(path).expanduser()
    card = read_card(folder)
    weights = folder / card["weights"]
    if _sha256(weights) != card["sha256"]:
        raise UserError(f"{weights} does not match the sha256 on its card: the file changed after export")
    net = create_model(card)
    net.load_state_dict(load_file(str(weights)), strict=True)
    return net.eval()
