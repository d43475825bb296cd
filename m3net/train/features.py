"""The cache's features for the head stage: where they live (device, pinned host memory or streamed from
the file), how an episode's clips are gathered from them (FeatureBank), and the input normalisation every
head sees alike (InputNorm, ``--input-norm``)."""
import os

import numpy as np
import torch

from m3net.cache import ChannelStatistics, PrefetchingReader, RowReader, channel_statistics, load_cache
from m3net.cache.reader import convert_maps
from m3net.config import Settings, setting, settings
from m3net.errors import CheckpointError, ConfigError

RESIDENCIES = ("auto", "device", "host", "disk")
# Share of free GPU / available host memory a feature bank may take (the rest is for the model,
# activations and everything else on the machine).
HEADROOM = 0.8

INPUT_NORMS = ("none", "center", "standardize")
# Added to each channel's variance before standardising, so a channel that barely varies over the training
# rows (a dead ReLU channel of random weights) is centred and scaled by at most 1/sqrt(eps), not blown up.
VARIANCE_EPS = 1e-5


@settings
class InputNormSettings(Settings):
    """The input normalisation of train-head, evaluate, finetune, predict, demo and reproduce: one for
    every head of a command."""

    input_norm: str = setting(
        "auto", "Per-channel normalisation of the backbone's maps, the same for every head: none (the paper's), "
        "center (minus the channel means) or standardize (also divided by the channel standard deviations), "
        "with the training split's channel statistics (`m3net cache-stats CACHE`; finetune: --stats-cache or "
        "--init-head). auto: the choice of the checkpoint the command reads (evaluate, predict, --resume, "
        "--init-head), else none. A checkpoint is never fed another normalisation than it was trained with.",
        choices=("auto",) + INPUT_NORMS)


class InputNorm:
    """One input normalisation of cached maps (..., C): none, or per channel (x - mean) (center) or
    (x - mean) / sqrt(var + eps) (standardize) with a split's ChannelStatistics, computed in float32.

    The FeatureBank applies it while it reads the cache (``normalise_cached``: normalised in float32, rounded
    to float16 like every cached map), so every residency, --pool-on-load (pooling is a mean and this map is
    affine per channel: they commute) and every head of a command see the same values; finetune applies it
    to the backbone's maps (``__call__``). Checkpoints carry the kind and the statistics (``checkpoint_entries``).
    """

    def __init__(self, kind="none", statistics=None):
        if kind not in INPUT_NORMS:
            raise ConfigError(f"--input-norm {kind}: expected one of {', '.join(INPUT_NORMS)}")
        if kind != "none" and statistics is None:
            raise ValueError(f"InputNorm({kind!r}) needs ChannelStatistics")
        self.kind = kind
        self.statistics = statistics if kind != "none" else None
        self._tensors = {}  # device -> (shift, scale) float32 (C,)

    @property
    def active(self):
        return self.kind != "none"

    def _on(self, device):
        if device not in self._tensors:
            mean, std = self.statistics.mean, self.statistics.std
            scale = 1 / np.sqrt(std**2 + VARIANCE_EPS) if self.kind == "standardize" else np.ones_like(mean)
            self._tensors[device] = (torch.as_tensor(mean, dtype=torch.float32, device=device),
                                     torch.as_tensor(scale, dtype=torch.float32, device=device))
        return self._tensors[device]

    def __call__(self, maps):
        """maps (..., C) -> float32 (..., C) normalised (none: ``maps`` unchanged)."""
        if not self.active:
            return maps
        shift, scale = self._on(maps.device)
        return (maps.float() - shift) * scale

    def normalise_cached(self, maps):
        """float16 maps (..., C) (a numpy array, as the cache holds them) normalised and rounded to float16, as
        the FeatureBank holds them (none: unchanged)."""
        return convert_maps(maps, normalise=self) if self.active else maps

    def checkpoint_entries(self):
        """What a checkpoint stores: ``input_norm`` and, when active, ``input_statistics`` (tensors and
        plain values: mean, std, rows and the statistics' provenance)."""
        if not self.active:
            return {"input_norm": "none"}
        s = self.statistics
        return {"input_norm": self.kind,
                "input_statistics": {"mean": torch.as_tensor(s.mean), "std": torch.as_tensor(s.std),
                                     "rows": torch.as_tensor(s.rows), "values_per_channel": int(s.values_per_channel),
                                     "split": s.split, "created": s.created, "code_version": s.code_version,
                                     "source": s.source}}

    def describe(self):
        """{"input_norm", "statistics": their provenance or None} for results and records."""
        return {"input_norm": self.kind, "statistics": self.statistics.provenance() if self.active else None}

    def same_as(self, other):
        if self.kind != other.kind:
            return False
        if not self.active:
            return True
        return all(np.array_equal(getattr(self.statistics, k), getattr(other.statistics, k))
                   for k in ("mean", "std"))


def checkpoint_input_norm(state, path="checkpoint"):
    """The InputNorm a trained head's checkpoint was trained with. Checkpoints written before --input-norm
    have none (their M3Net heads may normalise inside, with the head option input_norm)."""
    kind = state.get("input_norm", "none")
    if kind == "none":
        return InputNorm()
    saved = state.get("input_statistics")
    if not isinstance(saved, dict) or not {"mean", "std", "rows"} <= set(saved):
        raise CheckpointError(f"{path}: trained with --input-norm {kind} but holds no input_statistics (mean, std, "
                              "rows); the checkpoint is incomplete")
    statistics = ChannelStatistics(
        mean=saved["mean"].double().numpy(), std=saved["std"].double().numpy(), rows=saved["rows"].numpy(),
        values_per_channel=int(saved.get("values_per_channel", 0)), split=saved.get("split", "train"),
        created=saved.get("created", ""), code_version=saved.get("code_version", ""), source=saved.get("source", ""))
    return InputNorm(kind, statistics)


def input_norm_for(requested, checkpoints=(), cache_path=None):
    """The one InputNorm every head of a command sees.

    requested: the --input-norm given ("auto": the checkpoints' own choice, else none); checkpoints: the
    [(label, state)] of the trained heads the command reads, each of which must have been trained with that
    choice (else a ConfigError naming both). The statistics are those the checkpoints carry (all the same:
    a head scores inputs normalised as in its training, whatever cache it reads now); without a checkpoint,
    those stored in ``cache_path`` (missing or stale ones are refused with the command that computes them).
    """
    norms = [(label, checkpoint_input_norm(state, label)) for label, state in checkpoints]
    kinds = sorted({norm.kind for _, norm in norms})
    if len(kinds) > 1:
        listed = "; ".join(f"{label}: {norm.kind}" for label, norm in norms)
        raise ConfigError(f"the checkpoints were trained with different --input-norm ({listed}); every head of one "
                          "evaluation sees the same input: score them in separate evaluations")
    kind = requested if requested != "auto" else (kinds[0] if kinds else "none")
    for label, norm in norms:
        if norm.kind != kind:
            raise ConfigError(f"--input-norm {kind}: {label} was trained with --input-norm {norm.kind}; it would see "
                              f"other inputs than in training (pass --input-norm {norm.kind}, or auto)")
    if kind == "none":
        return InputNorm()
    if norms:
        first_label, first = norms[0]
        for label, norm in norms[1:]:
            if not norm.same_as(first):
                raise ConfigError(f"{label} and {first_label} were trained with --input-norm {kind} but with "
                                  "different channel statistics (other caches); score them in separate evaluations")
        return first
    if cache_path is None:
        raise ConfigError(f"--input-norm {kind}: no checkpoint carries channel statistics and no cache was given")
    return InputNorm(kind, channel_statistics(cache_path, f"--input-norm {kind}"))


def refuse_double_normalisation(norm, head_options):
    """The m3net head's own option input_norm (kept so that older checkpoints score the same) and a run-level
    InputNorm must not both normalise the maps."""
    inner = head_options.get("input_norm", "none")
    if norm.active and inner != "none":
        raise ConfigError(f"--input-norm {norm.kind} with --head-opt input_norm={inner}: the maps would be normalised "
                          "twice; use --input-norm alone (the head option is kept for older checkpoints)")


def episode_rows(episode):
    """The rows of an episode's clips, supports then queries: (S + Q,)."""
    return np.concatenate([episode.support_rows, episode.query_rows])


class FeatureBank:
    """A cache's features for the head stage, gathered into episode tensors on ``device``.

    Resident (``features`` given: a float16 array, on ``device`` or in host memory, pinned when the
    device is CUDA so episode copies run asynchronously) or streamed (``reader`` given: each episode's
    clips read from the HDF5 file, one chunk per clip). With augmented views (V, K, T, ...) training
    draws one view per clip from the view generator it is given; evaluation uses view 0.

    Streamed with ``prefetch`` > 0, a background thread reads the episodes the loops announce with
    ``prefetch(sampler, start, stop)`` up to ``prefetch`` episodes ahead (episodes are a pure function of
    the sampler's seed and index); an episode asked for out of that order is read on demand. Either way
    ``episode()`` returns the same tensors. Its maps are read through the run's InputNorm (``open_bank``'s
    ``norm``), in every residency alike.
    """

    def __init__(self, cached, device, storage=None, reader=None, prefetch=0):
        device = torch.device(device)
        self.device, self.reader, self.prefetcher, self.plans = device, reader, None, {}
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
            if prefetch:
                # The thread hands over tensors, pinned for CUDA so the copy to the device runs asynchronously.
                pin = device.type == "cuda"
                convert = (lambda a: torch.from_numpy(a).pin_memory()) if pin else torch.from_numpy
                self.prefetcher = PrefetchingReader(reader, prefetch, convert=convert)
        self.has_views = len(shape) == 5
        self._clip_shape = shape[1:] if self.has_views else shape  # (T, H, W, C)

    @property
    def clip_shape(self):
        return tuple(self._clip_shape)

    def prefetch(self, sampler, start, stop):
        """Announce that episodes ``sampler.episode(start)`` .. ``(stop - 1)`` will be asked for in order
        (a no-op unless streamed with prefetch); a sampler announced again starts over."""
        if self.prefetcher is None:
            return
        if sampler in self.plans:
            self.prefetcher.cancel(self.plans[sampler])
        self.plans[sampler] = self.prefetcher.plan(lambda i: self.rows[episode_rows(sampler.episode(i))], start, stop)

    def _clips(self, rows):
        """(S + Q, [K,] T, H, W, C) features of ``rows``, on the features' device (host when streamed)."""
        if self.reader is None:
            return self.features[torch.as_tensor(rows, device=self.features.device)]
        file_rows = self.rows[rows]
        if self.prefetcher is None:
            return torch.from_numpy(self.reader.read(file_rows))
        plan = next((p for p in self.plans.values() if p.expects(file_rows)), None)
        return self.prefetcher.take(plan) if plan is not None else self.prefetcher.read(file_rows)

    def _on_device(self, clips, rng):
        if self.has_views:
            n = len(clips)
            views = rng.integers(0, clips.shape[1], size=n) if rng is not None else np.zeros(n, int)
            clips = clips[torch.arange(n, device=clips.device), torch.as_tensor(views, device=clips.device)]
        return clips.to(self.device, non_blocking=True)

    def episode(self, episode, rng=None):
        """(support (S,T,H,W,C), support_labels (S,), query (Q,T,H,W,C), query_labels (Q,))."""
        clips = self._clips(episode_rows(episode))  # (S + Q, [K,] T, H, W, C)
        support, query = clips[:len(episode.support_rows)], clips[len(episode.support_rows):]
        # Supports' views are drawn before the queries', each in its own draw (as the views always were).
        return (
            self._on_device(support, rng),
            torch.as_tensor(episode.support_labels, device=self.device),
            self._on_device(query, rng),
            torch.as_tensor(episode.query_labels, device=self.device),
        )

    def close(self):
        """Stops the prefetch thread (waiting for it) and closes the cache file; safe to call twice."""
        if self.prefetcher is not None:
            self.prefetcher.close()  # the thread closes the file it owns
            self.prefetcher, self.plans = None, {}
        elif self.reader is not None:
            self.reader.close()


@settings
class ResidencySettings(Settings):
    """Where the head stage keeps a cache's features (train-head, evaluate)."""

    resident: str = setting("auto", "Where the cached features live: device (GPU memory), host (pinned RAM), disk "
                            "(streamed from the cache file), or auto: the first that fits.", choices=RESIDENCIES)
    pool_on_load: bool = setting(False, "Keep the cached maps average-pooled to the head's n x n when that pooling is "
                                 "its first operation (m3net with IFCE and no input_norm: ~3x less memory; heads "
                                 "that start with the spatial mean: 1x1, 49x less), the same result up to float16 "
                                 "rounding.")
    memory_limit: float = setting(0.0, "GiB of host/GPU memory the features may take (0: what is free); to plan for "
                                  "a smaller machine.", minimum=0)
    prefetch: int = setting(4, "Streamed features (--resident disk): episodes a background thread reads ahead of the "
                            "one in use (0: read each episode when it is needed). Each holds one episode's features "
                            "in host memory.", minimum=0)


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


def open_bank(path, splits, device, resident="auto", memory_limit=0.0, pool=None, meta=None, prefetch=0,
              norm=None):
    """(cached split metadata, FeatureBank, description) with the residency chosen from the sizes.

    pool=n keeps every map average-pooled to n x n (for heads whose first operation on the maps is
    that pooling, FewShotHead.input_pool(): the same result up to float16 rounding, ~3x less memory).
    meta: the split's metadata when the caller has read it already (``load_cache(..., features=False)``).
    prefetch: episodes read ahead in a background thread when the features are streamed (FeatureBank).
    norm: the InputNorm every map is read through (in every residency alike).
    """
    normalise = norm if norm is not None and norm.active else None
    if resident not in RESIDENCIES:
        raise ConfigError(f"--resident {resident}: expected one of {', '.join(RESIDENCIES)}")
    if meta is None or pool:
        meta = load_cache(path, splits=splits, features=False, pool=pool)
    needed = len(meta.rows) * int(np.prod(meta.feature_shape)) * 2  # float16
    choice, reason = choose_residency(needed, device, resident, memory_limit)
    if choice == "disk":
        bank = FeatureBank(meta, device, reader=RowReader(path, pool, normalise), prefetch=prefetch)
    else:
        storage = "device" if choice == "device" else "host"
        bank = FeatureBank(load_cache(path, splits=splits, pool=pool, normalise=normalise), device, storage=storage)
    where = {"device": f"on {device}", "host": "in host memory" + (" (pinned)" if device.type == "cuda" else ""),
             "disk": f"streamed from {path}" + (f", {prefetch} episodes read ahead" if prefetch else "")}[choice]
    pooled = f", pooled to {pool}x{pool} on load" if pool else ""
    if normalise is not None:
        done = {"center": "centred", "standardize": "standardised"}[normalise.kind]
        pooled += f", {done} with the {normalise.statistics.split} split's channel statistics"
    return meta, bank, f"features {where}{pooled} ({reason})"
