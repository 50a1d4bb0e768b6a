"""What resuming a run from its checkpoint requires, shared by the run's own start (Trainer.restore) and the
read-only check a sweep makes of every cell before its first one starts (ssl_zoo.launch.resumable)."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.common.errors import UserError

LOAD_ERRORS = (KeyError, RuntimeError, ValueError, TypeError, AttributeError)  # a state that does not fit


def check_world_size(state: dict, run_dir: Path, world: int) -> None:
    """The checkpoint was written by as many processes as resume it: otherwise the global batch would change."""
    written_by = int(state.get("world_size", 1))
    if written_by != world:
        raise UserError(f"checkpoint in {run_dir} comes from {written_by} process(es), this run has {world}: the "
                        f"global batch would change; resume it on {written_by} or train under another run_name")


def load_resume_state(method, optimizer, probe, state: dict, path: Path) -> None:
    """The method, optimizer and online-probe states loaded in this order; one line when they do not fit."""
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        probe.load(state)
    except LOAD_ERRORS as err:
        raise UserError(f"checkpoint {path} does not fit this config ({type(err).__name__}); delete "
                        f"{path.parent} to restart the run, or train under another run_name") from err
