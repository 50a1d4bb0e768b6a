"""Which ablation applies to which method, derived from the files themselves.

An ablation (conf/ablation/<name>.yaml, `# @package _global_`) is a plain override of `method.` keys (and,
rarely, of top-level keys such as `trainer.`). It applies to a method exactly when every key it sets exists in
that method's own yaml (conf/method/<name>.yaml): `no_predictor` sets `method.predictor.enabled`, so it applies
to the methods with a predictor and to no other. Hydra would silently ADD a missing key when composing a config
group file, so this check is what turns "no meaning here" into a one-line error. An ablation may also list
`ablation.methods: [...]` to restrict itself further.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import conf_dir


def _conf_dir() -> Path:  # one function, so that a test can point the checks at a copy of conf/
    return conf_dir()


def _leaf_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, DictConfig) and len(node) > 0:
        keys: list[str] = []
        for k in node:
            keys += _leaf_keys(node._get_node(k), f"{prefix}{k}.")
        return keys
    return [prefix[:-1]]


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _find(group: str, name: str) -> Path | None:
    """The group's yaml whose stem, or failing that whose `name` key, is `name`."""
    folder = _conf_dir() / group
    direct = folder / f"{name}.yaml"
    if direct.is_file():
        return direct
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.load(path)
        named = node.get(group, node) if group == "ablation" else node
        if isinstance(named, DictConfig) and named.get("name") == name:
            return path
    return None


def ablation_keys(ablation_file: Path) -> list[str]:
    """Dotted keys an ablation file sets (its own `ablation.*` bookkeeping excluded)."""
    node = OmegaConf.load(ablation_file)
    return [k for k in _leaf_keys(node) if k.split(".")[0] not in ("ablation", "defaults")]


def missing_keys(ablation_file: Path, method_file: Path) -> list[str]:
    """Keys the ablation sets that the method (or the top-level config) does not have."""
    method = OmegaConf.load(method_file)
    top = OmegaConf.load(_conf_dir() / "config.yaml")
    missing = []
    for key in ablation_keys(ablation_file):
        head, _, rest = key.partition(".")
        ok = _has_key(method, rest) if head == "method" else _has_key(top, key)
        if not ok:
            missing.append(key)
    return missing


def applicable_methods(ablation_file: Path) -> list[str]:
    allowed = OmegaConf.load(ablation_file).get("ablation", {}).get("methods")
    out = []
    for path in sorted((_conf_dir() / "method").glob("*.yaml")):
        name = str(OmegaConf.load(path).get("name", path.stem))
        if (allowed is None or name in allowed) and not missing_keys(ablation_file, path):
            out.append(name)
    return out


def check_ablation(cfg: DictConfig) -> None:
    """Raise a one-line UserError when cfg's ablation has no meaning for cfg's method."""
    name, method = str(cfg.ablation.name), str(cfg.method.name)
    if name == "none":
        return
    ablation_file, method_file = _find("ablation", name), _find("method", method)
    if ablation_file is None or method_file is None:
        return  # not a shipped file pair (a composed-in-code config): nothing to compare against
    allowed = cfg.ablation.get("methods")
    if isinstance(allowed, ListConfig) and method not in allowed:
        raise UserError(f"ablation '{name}' does not apply to method '{method}'; it applies to: "
                        f"{', '.join(map(str, allowed))}")
    missing = missing_keys(ablation_file, method_file)
    if missing:
        applies = applicable_methods(ablation_file)
        raise UserError(f"ablation '{name}' does not apply to method '{method}' ({method} has no {missing[0]}); "
                        f"it applies to: {', '.join(applies) or 'no shipped method'}")
