"""A value a user gave, written back into a one-line error message the way the user would have written it."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

JSON_WIDTH = 30  # a run's JSON file may hold anything: a long value is cut to this many characters


def shown(value: Any, notation: str = "config") -> str:
    """`config` (a config file or override): null, true/false, strings quoted; `json` (a value read from a run's
    JSON file): JSON text, at most JSON_WIDTH characters."""
    if notation == "json":
        text = json.dumps(value) if not isinstance(value, float) else repr(value)
        return text if len(text) <= JSON_WIDTH else text[:JSON_WIDTH - 3] + "..."
    if value is None:
        return "null"
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    return repr(value) if isinstance(value, str) else str(value).replace("True", "true").replace("False", "false")
