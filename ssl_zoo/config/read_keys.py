"""Which keys of its node the chosen option of a config group reads, so that a command-line setting the chosen
parts would ignore is refused in one line instead of starting a run that does not do what it says.

An option reads the keys its own file sets (conf/<group>/<option>.yaml), plus the keys every option of the group
shares (conf/data_keys.yaml for data), less those a comment line `# unread <key>, <key>: <why>` names: keys a
file keeps only because the schema gives every option of the group the same keys (digits.yaml has `root: null`;
the digits have no files). Hydra refuses a key the chosen file lacks with a bare "not in struct"; a key it has
but marks unread, Hydra would set and the run would ignore. Both are refused here, naming the options that read
the key, before anything is composed or written.

Only the user's overrides are held to this: an experiment file is written for one choice of each group and may
set keys another choice ignores (compare_methods sets encoder.width for its small CNN).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ssl_zoo.common.errors import UserError
from ssl_zoo.common.paths import conf_dir
from ssl_zoo.config.compose import choices, override_key

CHECKED = ("data", "encoder", "launcher", "method")  # views: the method picks it, ablation / experiment: no keys
SHARED = {"data": "data_keys.yaml"}  # keys every option of the group has (`# @package _global_`, under data:)
_UNREAD = re.compile(r"#\s*unread\s+(?P<keys>[\w\s,]+?)\s*:\s*(?P<why>.+?)\s*$")


@dataclass(frozen=True)
class OptionKeys:
    reads: frozenset[str]
    unread: Mapping[str, str]  # key -> why the option does not read it


def _file_keys(text: str, group: str, shared: bool) -> tuple[set[str], dict[str, str]]:
    node = OmegaConf.create(text) or OmegaConf.create({})
    if shared:
        node = node.get(group) or OmegaConf.create({})
    keys = {str(k) for k in node.keys() if k != "defaults"} if isinstance(node, DictConfig) else set()
    unread = {}
    for line in text.splitlines():
        mark = _UNREAD.fullmatch(line.strip())
        if mark:
            unread |= {k: mark["why"] for k in re.split(r"[\s,]+", mark["keys"]) if k}
    return keys, unread


@functools.cache
def option_keys(group: str, option: str) -> OptionKeys:
    """The keys `group=option` reads and those it marks unread (from the shipped files)."""
    keys: set[str] = set()
    unread: dict[str, str] = {}
    files = [(conf_dir() / SHARED[group], True)] if group in SHARED else []
    for path, shared in [*files, (conf_dir() / group / f"{option}.yaml", False)]:
        found, marked = _file_keys(path.read_text(), group, shared)
        keys |= found
        unread |= marked
    return OptionKeys(frozenset(keys - unread.keys()), unread)


def readers(group: str, key: str) -> list[str]:
    """The options of `group` that read `key`."""
    return [o for o in choices(group) if key in option_keys(group, o).reads]


def not_read(group: str, option: str, key: str) -> str | None:
    """The one-line refusal of `<group>.<key>` under `group=option`; None when the option reads it, or when no
    option of the group knows the key (a misspelling: Hydra's refusal names the closest key)."""
    if option not in choices(group):
        return None  # not a shipped option: nothing to compare against
    keys = option_keys(group, option)
    if key in keys.reads:
        return None
    reading = readers(group, key)
    if not reading and key not in keys.unread:
        return None
    why = keys.unread.get(key)
    line = f"{group}.{key} is not read by {group}={option}{f' ({why})' if why else ''}; remove it"
    article = "an" if group[0] in "aeiou" else "a"
    return line + (f", or choose {article} {group}= that reads it ({', '.join(reading)})" if reading else "")


def check_overrides_read(overrides: Sequence[str], chosen: Mapping[str, str]) -> None:
    """Every `<group>.<key>=...` override must be read by the chosen option of its group (chosen: group -> option)."""
    for override in overrides:
        group, _, rest = override_key(override).partition(".")
        if group in CHECKED and rest and group in chosen:
            line = not_read(group, chosen[group], rest.split(".", 1)[0])
            if line:
                raise UserError(line)


def chosen_options(cfg: DictConfig) -> dict[str, str]:
    """group -> option of a config composed from group choices alone (each shipped option's name is its file's)."""
    out = {}
    for group in CHECKED:
        node = cfg.get(group)
        name = node.get("name") if isinstance(node, DictConfig) else None
        if isinstance(name, str):
            out[group] = name
    return out
