"""Head checkpoints: model, optimizer, scheduler, RNG, episodes trained, full config and cache provenance.

Everything is stored as tensors and plain Python values so ``torch.load(weights_only=True)``
reads it back (no pickled classes). ``episodes`` counts training episodes over all processes and
``optimizer_steps`` the optimizer steps they made; checkpoints written before those keys hold ``step``
instead (episodes of one process), which ``trained_episodes`` reads the same way.
"""
import os

import torch

from m3net.cache.schema import ProvenanceError, provenance_differences
from m3net.errors import CheckpointError
from m3net.runtime import load_torch_file

FORMAT = "m3net-head-checkpoint-1"


def save_checkpoint(path, **state):
    """Atomic write: a crash while saving never leaves a truncated checkpoint behind."""
    tmp = f"{path}.tmp"
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)  # no half-written file left behind; the previous checkpoint stays whole
        if isinstance(err, OSError):
            raise CheckpointError(f"{path}: could not be written ({err.strerror or err}); the previous "
                                  "checkpoint there is unchanged") from None
        raise


# What every head checkpoint holds (finetune checkpoints add backbone, init_backbone and scaler), besides
# "episodes" (or "step", before it was called that).
REQUIRED_KEYS = ("head", "head_config", "model", "train_config", "provenance")


def trained_episodes(state):
    """The training episodes (all processes) a checkpoint holds; an older checkpoint's ``step`` (one process: a step
    was an episode; under torchrun it counted each rank's episodes)."""
    return int(state["episodes"] if "episodes" in state else state["step"])


def optimizer_steps(state):
    """The optimizer steps a checkpoint holds: ``optimizer_steps``, or for an older checkpoint its scheduler's
    count (one scheduler step per optimizer step then)."""
    return int(state["optimizer_steps"] if "optimizer_steps" in state else state["scheduler"]["last_epoch"])


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    state = load_torch_file(path, CheckpointError, "checkpoint", map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: not an m3net head checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if "episodes" not in state and "step" not in state:
        missing.append("episodes")
    if missing:
        raise CheckpointError(f"{path}: an incomplete m3net checkpoint (missing {', '.join(missing)})")
    return state


def load_module_state(module, state_dict, path, what="model"):
    """``module.load_state_dict`` whose key or shape mismatch is a CheckpointError naming the file."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise CheckpointError(f"{path}: its {what} does not fit the {type(module).__name__} it configures "
                              f"({detail})") from None


def features_provenance(state, path):
    """The cache provenance a checkpoint's head expects. A finetune checkpoint (it carries its
    "backbone") expects features of its own tuned trunk: a cache from `m3net extract --weights PATH`."""
    if "backbone" not in state:
        return state["provenance"]
    from m3net.extract.backbone import file_sha256

    return {**state["provenance"], "weights": os.path.abspath(path), "weights_sha256": file_sha256(path)}


def features_entry(head, clip_shape):
    """The checkpoint entry "features": what ``head`` was built for and trained on, from the shape of one clip's
    features as it read them, (..., T, H, W, C) (a views axis before T left out): the width C, the frames T, the
    map H x W and the head's first pooling (``FewShotHead.input_pool()``: maps already pooled to it fit too)."""
    frames, height, width, channels = (int(n) for n in clip_shape[-4:])
    return {"channels": channels, "frames": frames, "map": [height, width], "pool": head.input_pool()}


def trained_features(state):
    """A checkpoint's "features" entry. One written before the entry existed gets C and T from its head_config
    (every checkpoint's head was built with its feature_dim and num_frames) and no map (None: not compared)."""
    if "features" in state:
        return state["features"]
    config = state["head_config"]
    return {"channels": int(config["feature_dim"]), "frames": int(config["num_frames"]), "map": None, "pool": None}


def _describe(features, note=""):
    maps = f", {features['map'][0]}x{features['map'][1]} maps" if features.get("map") else ""
    return f"{features['channels']}-channel features ({features['frames']} frames{maps}{note})"


def check_features(state, checkpoint, clip_shape, source, provenance=None, maps=True):
    """Refuses features a checkpoint's head was not trained on, from their shape (and attributes) alone, so before
    any feature is read: every route that pairs a checkpoint with features calls this first.

    ``checkpoint`` and ``source`` name both sides as the command names them ("--checkpoint runs/a/best.pt",
    "--cache b.h5"); ``clip_shape``: one clip's features, (..., T, H, W, C). Compared with the checkpoint's
    "features" (``trained_features``): the width C and the frames T (the head's layers are built for C, and T is
    its num_frames: the T x T layers of m3net's IVCE and STRM fix it, the API decodes that many frames); the map
    H x W where the checkpoint records it, unless ``maps`` is False (finetune --init-head: the head trains on maps
    of the run's --crop from then on, and every head runs on any map size); a map fits when it is the same, or when
    one side is already pooled to the n x n the head pools to first. A difference is a CheckpointError. Then, given
    a cache's attributes (``provenance``), those the head expects (``state["provenance"]``) are compared: a
    difference is a ProvenanceError (the views, sampling, weights, crop, ...)."""
    expected = trained_features(state)
    frames, height, width, channels = (int(n) for n in clip_shape[-4:])
    given = {"channels": channels, "frames": frames, "map": [height, width]}
    trained_map, pool = expected.get("map"), expected.get("pool")
    maps_fit = (not maps or trained_map is None or list(trained_map) == given["map"]
                or bool(pool) and [pool, pool] in (list(trained_map), given["map"]))
    if (channels, frames) != (expected["channels"], expected["frames"]) or not maps_fit:
        pooled = f", pooled to {pool}x{pool} first" if pool and not maps_fit else ""
        raise CheckpointError(f"{checkpoint}: its head was built for {_describe(expected, pooled)}; {source}: "
                              f"{_describe(given)}; a head reads only features like those it was trained on: give it "
                              "such features, or train a head on these")
    differences = provenance_differences(provenance, state["provenance"]) if provenance is not None else []
    if differences:
        raise ProvenanceError(f"{source}: not the kind of cache {checkpoint} was trained on: "
                              + "; ".join(f"{key}: {have!r} vs {want!r}" for key, have, want in differences))


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
