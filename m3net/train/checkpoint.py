"""Head checkpoints: model, optimizer, scheduler, RNG, step, full config and cache provenance.

Everything is stored as tensors and plain Python values so ``torch.load(weights_only=True)``
reads it back (no pickled classes).
"""
import os

import torch

from m3net.errors import CheckpointError  # noqa: F401 (re-exported)

FORMAT = "m3net-head-checkpoint-1"




def save_checkpoint(path, **state):
    """Atomic write: a crash while saving never leaves a truncated checkpoint behind."""
    tmp = f"{path}.tmp"
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable m3net checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: not an m3net head checkpoint (format {found!r})")
    return state


def features_provenance(state, path):
    """The cache provenance a checkpoint's head expects. A finetune checkpoint (it carries its
    "backbone") expects features of its own tuned trunk: a cache from `m3net extract --weights PATH`."""
    if "backbone" not in state:
        return state["provenance"]
    from m3net.extract.backbone import file_sha256

    return {**state["provenance"], "weights": os.path.abspath(path), "weights_sha256": file_sha256(path)}


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
