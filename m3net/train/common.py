"""Pieces the training, evaluation and prediction loops share."""
import os

import numpy as np
import torch

from m3net.cache import RowReader, load_cache
from m3net.config import setting
from m3net.errors import ConfigError

RESIDENCIES = ("auto", "device", "host", "disk")
# Share of free GPU / available host memory a feature bank may take (the rest is for the model,
# activations and everything else on the machine).
HEADROOM = 0.8


class FeatureBank:
    """A cache's features for the head stage, gathered into episode tensors on ``device``.

    Resident (``features`` given: a float16 array, on ``device`` or in host memory, pinned when the
    device is CUDA so episode copies run asynchronously) or streamed (``reader`` given: each episode's
    clips read from the HDF5 file, one chunk per clip). With augmented views (V, K, T, ...) training
    draws one view per clip from the view generator it is given; evaluation uses view 0.
    """

    def __init__(self, cached, device, storage=None, reader=None):
        device = torch.device(device)
        self.device, self.reader = device, reader
        self.residency = "disk" if reader is not None else (storage or device.type)
        if reader is None:
            features = torch.from_numpy(np.ascontiguousarray(cached.features))
            on_host = self.residency == "host"
            if on_host and device.type == "cuda":
                features = features.pin_memory()
            self.features = features if on_host else features.to(device)
            shape = tuple(self.features.shape[1:])
        else:
            self.features, self.rows, shape = None, cached.rows, cached.feature_shape
        self.has_views = len(shape) == 5
        self._clip_shape = shape[1:] if self.has_views else shape  # (T, H, W, C)

    @property
    def clip_shape(self):
        return tuple(self._clip_shape)

    def _rows(self, rows):
        if self.reader is not None:
            return torch.from_numpy(self.reader.read(self.rows[np.asarray(rows)]))
        return self.features[torch.as_tensor(rows, device=self.features.device)]

    def gather(self, rows, rng=None):
        clips = self._rows(rows)
        if self.has_views:
            views = rng.integers(0, clips.shape[1], size=len(rows)) if rng is not None else np.zeros(len(rows), int)
            clips = clips[torch.arange(len(rows), device=clips.device), torch.as_tensor(views, device=clips.device)]
        return clips.to(self.device, non_blocking=True)

    def episode(self, episode, rng=None):
        """(support (S,T,H,W,C), support_labels (S,), query (Q,T,H,W,C), query_labels (Q,))."""
        return (
            self.gather(episode.support_rows, rng),
            torch.as_tensor(episode.support_labels, device=self.device),
            self.gather(episode.query_rows, rng),
            torch.as_tensor(episode.query_labels, device=self.device),
        )

    def close(self):
        if self.reader is not None:
            self.reader.close()


def residency_settings():
    """The --resident, --pool-on-load and --memory-limit options train-head and evaluate share."""
    return {
        "resident": setting("auto", "Where the cached features live: device (GPU memory), host (pinned RAM), disk "
                            "(streamed from the cache file), or auto: the first that fits.", choices=RESIDENCIES),
        "pool_on_load": setting(False, "Keep the cached maps average-pooled to the head's n x n when that pooling is "
                                "its first operation (m3net with IFCE and no input_norm: ~3x less memory; heads "
                                "that start with the spatial mean: 1x1, 49x less), the same result up to float16 "
                                "rounding."),
        "memory_limit": setting(0.0, "GiB of host/GPU memory the features may take (0: what is free); to plan for "
                                "a smaller machine.", minimum=0),
    }


def available_host_bytes():
    """MemAvailable of /proc/meminfo (Linux), else the physical memory size."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_residency(needed, device, resident="auto", memory_limit=0.0):
    """(residency, reason) for a bank of ``needed`` bytes. ``memory_limit`` (GiB, 0: none) caps the
    host and device memory the bank may use (to plan for a smaller machine, or benchmark streaming)."""
    cap = memory_limit * 2**30 if memory_limit > 0 else float("inf")
    host = min(HEADROOM * available_host_bytes(), cap)
    gpu = min(HEADROOM * torch.cuda.mem_get_info(device)[0], cap) if device.type == "cuda" else 0
    gib = lambda n: f"{n / 2**30:.2f} GiB"  # noqa: E731
    fits = {"device": needed <= (gpu if device.type == "cuda" else host), "host": needed <= host, "disk": True}
    if resident == "auto":
        for choice in ("device", "host", "disk"):
            if fits[choice] and (choice != "host" or device.type == "cuda"):
                break
        limits = f"{gib(gpu)} usable on {device}, " if device.type == "cuda" else ""
        return choice, f"{gib(needed)} of features; {limits}{gib(host)} usable in host memory"
    if not fits[resident]:
        room = gpu if resident == "device" and device.type == "cuda" else host
        raise ConfigError(f"--resident {resident}: the features need {gib(needed)}, only {gib(room)} is usable "
                          f"there; use --resident auto (streams from the cache file when nothing fits)")
    return resident, "asked for"


def open_bank(path, splits, device, resident="auto", memory_limit=0.0, pool=None, meta=None):
    """(cached split metadata, FeatureBank, description) with the residency chosen from the sizes.

    pool=n keeps every map average-pooled to n x n (for heads whose first operation on the maps is
    that pooling, FewShotHead.input_pool(): the same result up to float16 rounding, ~3x less memory).
    meta: the split's metadata when the caller has read it already (``load_cache(..., features=False)``).
    """
    if resident not in RESIDENCIES:
        raise ConfigError(f"--resident {resident}: expected one of {', '.join(RESIDENCIES)}")
    if meta is None or pool:
        meta = load_cache(path, splits=splits, features=False, pool=pool)
    needed = len(meta.rows) * int(np.prod(meta.feature_shape)) * 2  # float16
    choice, reason = choose_residency(needed, device, resident, memory_limit)
    if choice == "disk":
        bank = FeatureBank(meta, device, reader=RowReader(path, pool))
    else:
        storage = "device" if choice == "device" else "host"
        bank = FeatureBank(load_cache(path, splits=splits, pool=pool), device, storage=storage)
    where = {"device": f"on {device}", "host": "in host memory" + (" (pinned)" if device.type == "cuda" else ""),
             "disk": f"streamed from {path}"}[choice]
    pooled = f", pooled to {pool}x{pool} on load" if pool else ""
    return meta, bank, f"features {where}{pooled} ({reason})"


def mean_and_ci(values):
    """Mean and 95% confidence half-width (1.96·std/√n) of per-episode values, in percent."""
    values = np.asarray(values, dtype=np.float64) * 100
    if len(values) == 0:
        return float("nan"), float("nan")
    ci = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(ci)


def episode_accuracies(outputs, query_labels):
    """{view: fraction of queries whose argmax is right} for each logits view of a head."""
    return {view: (logits.argmax(dim=-1) == query_labels).float().mean().item() for view, logits in outputs.items()}
