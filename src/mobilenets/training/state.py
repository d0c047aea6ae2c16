"""What makes a run resumable: every RNG state, and finding (and checking) the state of a run to continue."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MobileNetsError, one_line
from .config import TrainConfig

__all__ = ["STATE_FILE", "BEST_FILE", "seed_everything", "rng_state", "set_rng_state", "resolve_run"]

STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(loader_gen: torch.Generator) -> dict:
    """Every RNG a run draws from, as tensors and plain lists (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "loader": loader_gen.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_STATE_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "scaler", "ema", "history", "best", "rng")

# What a resumed run may change: how this process runs (not what it computes), how BN statistics are measured
# before evaluations, and the number of epochs (the schedule is re-planned: see the loop's _restore). Every
# other field is the run's and a different value is refused.
RUNTIME_FIELDS = ("threads", "workers", "device", "progress", "amp", "channels_last", "strict", "sync_bn",
                  "precise_bn")
RESUME_CHANGES = (*RUNTIME_FIELDS, "epochs")


def _flag(name: str) -> str:
    return {"channels_last": "--no-channels-last", "progress": "--no-progress"}.get(name, "--" + name.replace("_", "-"))


def _resumed_config(saved: TrainConfig, config: TrainConfig, state: dict, state_path: Path) -> TrainConfig:
    """The saved config with the changes ``config`` asks for that a resumed run can honour; any other asked
    change is a one-line error naming the flags."""
    mine, theirs = saved.to_dict(), config.to_dict()
    if theirs["data"] is not None and mine["data"] is not None and \
            Path(theirs["data"]).expanduser().resolve() == Path(mine["data"]).expanduser().resolve():
        theirs["data"] = mine["data"]  # the same folder, named from another folder or relative
    asked = config.asked - {"resume"}
    changes = {k: theirs[k] for k in sorted(asked) if theirs[k] != mine[k]}
    refused = [k for k in changes if k not in RESUME_CHANGES]
    if refused:
        what = ", ".join(f"{_flag(k)} ({mine[k]!r} in the run, {theirs[k]!r} asked)" for k in refused)
        raise MobileNetsError(f"{state_path}: a resumed run keeps its configuration; it cannot change {what} "
                              f"(only {', '.join(_flag(k) for k in RESUME_CHANGES)} can change; start a new run "
                              "with --weights for the rest)")
    done = state["epoch"]
    if "epochs" in changes and changes["epochs"] < done:
        raise MobileNetsError(f"{state_path}: the run has already trained {done} epochs; --epochs must be at least "
                              f"{done}, got {changes['epochs']}")
    changes["progress"] = config.progress  # this terminal's choice, asked or not
    return replace(saved, **changes)


# The command that trains (and resumes) each task's runs.
TRAIN_COMMANDS = {"classification": "train", "detection": "train-detection", "segmentation": "train-segmentation"}


def check_resumed_task(resume: str, task: str) -> None:
    """A one-line :class:`MobileNetsError` if the run ``resume`` names (its folder or its ``last.pt``) trains
    another task than ``task``, the command resuming it; a folder without a readable ``config.json`` is left to
    :func:`resolve_run` to report."""
    p = Path(resume)
    try:
        saved = json.loads(((p if p.is_dir() else p.parent) / "config.json").read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return
    if saved in TRAIN_COMMANDS and saved != task:
        raise MobileNetsError(f"{resume}: a {saved} run, not a {task} one: resume it with "
                              f"'mobilenets {TRAIN_COMMANDS[saved]} --resume {resume}'")


def resolve_run(config: TrainConfig) -> tuple[TrainConfig, Path, dict | None]:
    """The config, run folder and saved state of the run to continue (or a fresh run's config and folder).

    A resumed run uses the config saved in its ``last.pt``; a state that is not ours, or whose config differs
    from the run folder's ``config.json`` (another run's ``last.pt`` copied in), is a one-line error."""
    if config.resume is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = Path(config.output) if config.output else Path("runs") / f"{config.model}-{stamp}"
        if config.data is not None:  # saved absolute: the run resumes from any folder
            config = replace(config, data=os.path.abspath(Path(config.data).expanduser()))
        return config, out, None
    p = Path(config.resume)
    state_path = p / STATE_FILE if p.is_dir() else p
    if not state_path.is_file():
        raise MobileNetsError(f"{config.resume}: no training state to resume (expected {state_path})")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
            raise ValueError("missing entries")
        saved_dict = json.loads(state["config"])
        saved = TrainConfig.from_dict(saved_dict)
    except MobileNetsError as e:
        raise MobileNetsError(f"{state_path}: its saved config is invalid ({e})") from None
    except Exception as e:  # a foreign or damaged file: torch and json raise many types here
        raise MobileNetsError(f"{state_path}: not a mobilenets training state ({type(e).__name__})") from None
    folder_config = state_path.parent / "config.json"
    if folder_config.is_file():
        try:
            on_disk = TrainConfig.from_dict(json.loads(folder_config.read_text())).to_dict()
        except Exception as e:  # json and the config's checks raise many types
            reason = one_line(e, 120) or type(e).__name__
            raise MobileNetsError(f"{folder_config}: not a readable run config ({reason}); nothing was changed") \
                from None
        # (not epochs: a resumed run may extend itself, rewriting config.json before its state)
        keys = ("task", "model", "width", "resolution", "batch_size", "data", "head", "reduced_tail", "seed")
        if any(on_disk.get(k) != saved.to_dict().get(k) for k in keys):
            raise MobileNetsError(f"{state_path}: does not match {folder_config} (another run's state?); "
                                  "nothing was changed")
    if not isinstance(state["epoch"], int) or not 0 <= state["epoch"] <= saved.epochs:
        raise MobileNetsError(f"{state_path}: epoch {state['epoch']!r} is out of range for {saved.epochs} epochs")
    saved = _resumed_config(saved, config, state, state_path)
    saved.resume = str(state_path)
    return saved, state_path.parent, state
