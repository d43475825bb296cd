"""``m3net finetune``: backbone (ResNet-50 trunk) and head trained end to end on decoded frames.

Episodes come from the same EpisodeSampler as ``train-head``, over the clips present under --root
(a partial copy is the normal case; a split that cannot give one episode is refused before the run
folder is made); episode ``i`` and every random crop, flip and frame choice in it are pure functions
of (seed, i, clip), and checkpoints carry both models, optimizer, scheduler, RNG state and the
episodes trained, so ``--resume`` continues exactly. A clip that cannot be decoded is replaced by
another clip of its class (or the episode is skipped) and written to failures.csv; the run never
stops for one bad file.

Under torchrun (WORLD_SIZE > 1) backbone and head are wrapped in DistributedDataParallel. --episodes
counts episodes over all ranks: each round trains one episode per rank (rank r: episode e + r after e
episodes), so one optimizer step averages the gradients of world x --accumulate episodes, an effective
batch of that many episodes (the paper trains one per step). The lr schedule, validation and
checkpoints count episodes too. Rank 0 writes checkpoints and logs, each rank its own
failures-rank<r>.csv. Validation (test view, the val episodes train-head uses) is shared out across
the ranks and pooled; best.pt keeps the best. ``temperature_init=data`` sets the temperatures from
rank 0's first episode on every rank.

A finetune checkpoint is also a head checkpoint: `m3net extract --weights best.pt` builds the
cache of its tuned backbone, and `m3net evaluate --checkpoint best.pt --cache that.h5` scores it.
"""
import contextlib
import dataclasses
import logging
import os

import numpy as np
import torch

from m3net.cache.schema import PROVENANCE_KEYS
from m3net.config import RunSettings, from_group, setting, settings
from m3net.data.datasets import DatasetSettings, coverage, load_dataset
from m3net.data.episodes import EpisodeSampler, EpisodeSettings
from m3net.errors import ConfigError
from m3net.extract.backbone import FEATURE_CHANNELS, build_backbone
from m3net.extract.loop import ExtractConfig, cache_attrs, map_side
from m3net.extract.sampling import sample_indices
from m3net.extract.transforms import TransformConfig, normalise, test_view, train_view
from m3net.extract.video import Clip
from m3net.model import build_head
from m3net.model.registry import HeadSettings
from m3net.runtime import resolve_device
from m3net.train.checkpoint import (
    check_features,
    features_entry,
    load_checkpoint,
    load_module_state,
    optimizer_steps,
    restore_rng,
    rng_state,
    trained_episodes,
)
from m3net.train.features import InputNorm, InputNormSettings, input_norm_for, refuse_double_normalisation
from m3net.train.loop import (
    RESUMABLE_CHANGES,
    EpisodeTask,
    OptimizerSettings,
    RunFolder,
    Schedule,
    ScheduleSettings,
    advance_schedule,
    append_csv,
    check_resumed_config,
    clip_gradients,
    make_optimizer,
    make_scheduler,
    run_episodes,
)
from m3net.train.metrics import episode_accuracies, mean_and_ci
from m3net.train.presets import PresetSettings

logger = logging.getLogger(__name__)


@settings
class FinetuneConfig(DatasetSettings, HeadSettings, EpisodeSettings, OptimizerSettings, ScheduleSettings,
                     InputNormSettings, PresetSettings, RunSettings):
    out: str = setting("runs/finetune", "Run folder: best.pt, last.pt, train_log.csv, val_log.csv, "
                       "failures.csv, tensorboard/.", path="dir")
    weights: str = setting("imagenet", "imagenet | imagenet-v2 | random | PATH of a ResNet-50 state dict.")
    init_head: str = setting("", "Start the head from a train-head checkpoint (best.pt).", path="file")
    frames: int = setting(8, "Frames per clip (TSN segments).", minimum=1)
    crop: int = setting(224, "Crop size (frames resized to crop*8/7 first, as the extraction transform).", minimum=32)
    episodes: int = from_group(ScheduleSettings, "episodes", 10_000)
    stats_cache: str = setting("", "With --input-norm center|standardize (and no --init-head trained with it): a cache "
                               "extracted with these --weights, --frames and --crop whose training statistics "
                               "(`m3net cache-stats`) normalise the backbone's maps for the whole run.", path="file")
    backbone_lr: float = setting(1e-5, "Learning rate of the backbone.", minimum=0)
    freeze_stages: int = setting(0, "The first N trunk stages (stem, layer1, ...) keep their weights.",
                                 minimum=0, maximum=5)
    # Episodes of 10-50 clips from few classes give BatchNorm batch statistics unlike ImageNet's;
    # frozen BN (eval mode, affine fixed) keeps the pretrained statistics, as most video fine-tuning does.
    freeze_bn: bool = setting(True, "Keep BatchNorm frozen (pretrained statistics) or update it.",
                              option="--freeze-bn/--train-bn")
    amp: str = setting("auto", "Mixed precision on CUDA (auto: bf16 where supported, else fp16 with a grad scaler).",
                       choices=("auto", "bf16", "fp16", "off"))
    # Recomputes each trunk stage in backward; with BN not frozen its running statistics then move twice per step.
    checkpointing: bool = setting(False, "Gradient checkpointing of the trunk stages (less memory, one more "
                                  "forward per stage).", option="--checkpointing")
    workers: int = setting(2, "DataLoader processes decoding the next episodes (0: main process).", minimum=0)
    checkpoint_every: int = from_group(ScheduleSettings, "checkpoint_every", 100)
    log_every: int = from_group(ScheduleSettings, "log_every", 10)

    def episode_queries(self):
        """Queries per class of the episodes each split gives this run (test: none; given for coverage)."""
        return {"train": self.queries, "val": self.val_queries, "test": self.queries}

    def episode_splits(self):
        return ("train", "val") if self.val_episodes > 0 else ("train",)


# "episodes": the episodes trained when the failure was met (training: at the end of its round).
FAILURE_FIELDS = ("episodes", "phase", "clip_id", "path", "error")


class EpisodeFrames(torch.utils.data.Dataset):
    """Item k: episode ``indices[k]`` of ``sampler``, its clips decoded to uint8 frames.

    Returns (index, (support (S, T, 3, crop, crop), support_labels, query, query_labels) or None,
    failures). A clip that cannot be decoded is listed in failures and replaced by an unused clip
    of its class; None when the class has none left. Whole episodes are the unit of work, so
    DataLoader workers decode the next episodes while the GPU trains on this one.
    """

    def __init__(self, clips, sampler, indices, frames, transform, train, seed):
        self.clips, self.sampler, self.indices = clips, sampler, list(indices)
        self.frames, self.transform, self.train, self.seed = frames, transform, train, seed

    def __len__(self):
        return len(self.indices)

    def _decode(self, row, index, failures):
        clip = self.clips[int(row)]
        rng = np.random.default_rng([self.seed, index, int(row)])  # crop, flip and frames of (seed, episode, clip)
        try:
            video = Clip(clip.path)
            frames = video.read(sample_indices(len(video), self.frames, train=self.train, rng=rng))
            return train_view(frames, rng, self.transform) if self.train else test_view(frames, self.transform)
        except Exception as err:  # a bad file costs that clip, never the run
            failures.append({"clip_id": clip.clip_id, "path": clip.path, "error": f"{type(err).__name__}: {err}"})
            return None

    def __getitem__(self, k):
        index = self.indices[k]
        episode = self.sampler.episode(index)
        used = set(episode.support_rows.tolist()) | set(episode.query_rows.tolist())
        failures, tensors = [], []
        parts = ((episode.support_rows, episode.support_labels), (episode.query_rows, episode.query_labels))
        for rows, labels in parts:
            views = []
            for row, label in zip(rows, labels):
                view = self._decode(row, index, failures)
                while view is None:
                    same_class = self.sampler.by_class[int(episode.classes[label])]
                    spare = next((int(r) for r in same_class if int(r) not in used), None)
                    if spare is None:
                        return index, None, failures
                    used.add(spare)
                    view = self._decode(spare, index, failures)
                views.append(view)
            tensors += [torch.stack(views), torch.as_tensor(labels)]
        return index, tuple(tensors), failures


def _as_is(item):
    return item


class Finetuner(torch.nn.Module):
    """Backbone + head: clips (B, T, 3, H, W) -> feature maps (B, T, h, w, C) -> input norm -> head outputs."""

    def __init__(self, backbone, head, checkpointing, norm=None):
        super().__init__()
        self.backbone, self.head, self.checkpointing = backbone, head, checkpointing
        self.norm = norm or InputNorm()  # fixed statistics, not parameters: the backbone moves, they do not

    def features(self, clips):
        b, t = clips.shape[:2]
        x = clips.flatten(0, 1)  # (B·T, 3, H, W)
        for stage in self.backbone.stages():
            if self.checkpointing and self.training and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x.permute(0, 2, 3, 1).reshape(b, t, *x.shape[-2:], x.shape[1])  # (B, T, h, w, C)

    def forward(self, support, support_labels, query):
        s = support.shape[0]
        maps = self.norm(self.features(torch.cat([support, query])).float())
        return self.head(maps[:s], support_labels, maps[s:])


def amp_dtype_for(config, device):
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]


def _freeze(backbone, config):
    stages = backbone.stages()
    if not 0 <= config.freeze_stages <= len(stages):
        raise ConfigError(f"--freeze-stages {config.freeze_stages}: expected 0..{len(stages)}")
    for stage in stages[: config.freeze_stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
    if config.freeze_bn:
        for m in backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)


def set_train_mode(model, config):
    model.train()
    if config.freeze_bn:
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def backbone_clip_shape(config):
    """(T, H, W, C) of one clip's maps as the backbone gives them to the head: --frames, the --crop's map."""
    side = map_side(config.crop)
    return (config.frames, side, side, FEATURE_CHANNELS)


def checked_init_head(config):
    """The --init-head checkpoint, refused when its head is not --head or was not built for the backbone's maps
    at --frames (m3net.train.checkpoint.check_features; the map size may differ: the head trains on these maps)."""
    saved = load_checkpoint(config.init_head)
    if saved["head"] != config.head:
        raise ConfigError(f"--init-head {config.init_head}: a {saved['head']!r} head, not --head {config.head!r}")
    check_features(saved, f"--init-head {config.init_head}", backbone_clip_shape(config),
                   f"the ResNet-50 maps at --frames {config.frames} --crop {config.crop}", maps=False)
    return saved


def _initial_head(config):
    saved = checked_init_head(config)
    head = build_head(saved["head"], **saved["head_config"])
    load_module_state(head, saved["model"], config.init_head)
    return head


@dataclasses.dataclass
class Training:
    """Backbone + head and what updates them; ``step(config, episodes)`` is one optimizer step."""

    backbone: torch.nn.Module
    head: torch.nn.Module
    model: Finetuner
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    init_provenance: dict
    lr_names: tuple  # the option whose lr each optimizer group has ("lr": head, "backbone_lr"), in order

    def step(self, config, episodes):
        """One optimizer step; ``episodes``: the episodes trained once it is done (sets the lr that follows)."""
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the loss-scaled ones
        clip_gradients(self.optimizer, config)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        advance_schedule(self.scheduler, episodes)


def build_training(config, device, amp_dtype, norm=None):
    """The models (seeded), their two-group optimizer (head lr, backbone lr), StepLR and grad scaler; ``norm``:
    the InputNorm between backbone and head."""
    backbone, init_provenance = build_backbone(config.weights, seed=config.seed)
    _freeze(backbone, config)
    torch.manual_seed(config.seed)  # head init
    if config.init_head:
        head = _initial_head(config)
    else:
        head = build_head(config.head, feature_dim=2048, num_frames=config.frames, **config.head_options)
    model = Finetuner(backbone, head, config.checkpointing, norm).to(device)
    # A parameter-free head (protonet, otam, tsn-cosine) has no group: only the backbone trains through it.
    groups = {name: [p for p in module.parameters() if p.requires_grad]
              for name, module in (("lr", head), ("backbone_lr", backbone))}
    groups = {name: params for name, params in groups.items() if params}
    if not groups:
        raise ConfigError(f"--head {config.head} has no parameters and --freeze-stages {config.freeze_stages} "
                          "freezes the whole backbone: nothing to train; freeze fewer stages")
    optimizer = make_optimizer([{"params": params, "lr": getattr(config, name)} for name, params in groups.items()],
                               config)
    scheduler = make_scheduler(optimizer, config)
    # Only fp16 needs loss scaling; bf16 has fp32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return Training(backbone, head, model, optimizer, scheduler, scaler, init_provenance, tuple(groups))


def forward_episode(model, support, support_labels, query, amp_dtype):
    """Head outputs for uint8 frames already on the model's device, under autocast when ``amp_dtype``."""
    with torch.autocast(support.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(normalise(support), support_labels, normalise(query))


def _features_provenance(config, transform):
    """The cache attributes of the features this run's head sees at evaluation (test view, as
    `m3net extract` writes them); the tuned weights are filled in from the checkpoint file when it
    is loaded (m3net.train.checkpoint.features_provenance)."""
    extract = ExtractConfig(dataset=config.dataset, root=config.root, out="", frames=config.frames)
    attrs = cache_attrs(extract, {}, "fp32", transform)
    return {k: attrs[k] for k in PROVENANCE_KEYS if k in attrs}


def checked_dataset(config):
    """The dataset under --root, refused when no listed train/val clip is there or when a split the run draws
    episodes from (train; val when validating) cannot give one: before any model, run folder or log exists.
    Episodes are drawn from the present clips alone: a partial copy trains on what is there."""
    dataset = load_dataset(config.dataset, config.root)
    dataset.require_present(config.episode_splits())
    covered = coverage(dataset, config.way, config.shot, config.episode_queries())
    covered.require_episodes(config.episode_splits(), "finetune")
    logger.info(f"{config.dataset} under {config.root}: {covered.describe(config.episode_splits())}")
    return dataset


def finetune_input_norm(config, state, path):
    """The InputNorm between backbone and head, fixed for the whole run (the trunk moves, the statistics do
    not; checkpoints carry them, so evaluate and predict normalise a tuned backbone's maps the same way):
    a resumed run's own; --init-head's when that head was trained with one (it expects those inputs); else
    --input-norm ("auto": none) with the training statistics of --stats-cache. Checked before any frame is
    decoded; the cache's backbone is checked against --weights by ``check_stats_cache``."""
    if state is not None:
        return input_norm_for(config.input_norm, [(path, state)])
    if config.init_head:
        norm = input_norm_for(config.input_norm, [(config.init_head, load_checkpoint(config.init_head))])
        if norm.active and config.stats_cache:
            raise ConfigError(f"--stats-cache {config.stats_cache}: --init-head {config.init_head} carries the "
                              "statistics its head was trained with; drop --stats-cache")
        if norm.active:
            return norm
    kind = "none" if config.input_norm == "auto" else config.input_norm
    if kind == "none":
        if config.stats_cache:
            raise ConfigError(f"--stats-cache {config.stats_cache}: only read with --input-norm center or standardize")
        return InputNorm()
    if not config.stats_cache:
        raise ConfigError(f"--input-norm {kind}: finetune decodes frames and reads no cache, so the channel statistics "
                          f"come from --stats-cache CACHE (extracted with --weights {config.weights}, --frames "
                          f"{config.frames}, --crop {config.crop}; then `m3net cache-stats CACHE`) or from an "
                          f"--init-head trained with --input-norm {kind}")
    return input_norm_for(kind, (), config.stats_cache)


def check_stats_cache(config, init_provenance):
    """--stats-cache holds maps of this run's initial backbone at its frames and crop, else a ProvenanceError."""
    from m3net.cache import ProvenanceError, cache_info

    attrs = cache_info(config.stats_cache)["attrs"]
    expected = {"weights_sha256": init_provenance["weights_sha256"], "num_frames": config.frames, "crop": config.crop}
    differ = [f"{key}: cache has {attrs.get(key)!r}, this run {value!r}" for key, value in expected.items()
              if attrs.get(key) != value]
    if differ:
        raise ProvenanceError(f"--stats-cache {config.stats_cache}: not a cache of --weights {config.weights} at these "
                              f"frames and crop ({'; '.join(differ)}); its statistics would not describe this "
                              "run's maps")


def _distributed_setup(config):
    """(world, rank, device); joins the process group under torchrun (nccl on CUDA, gloo on CPU)."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = resolve_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


class FinetuneTask(EpisodeTask):
    """One finetune run, on this rank: backbone + head and what updates them (``built``; the model DDP-wrapped under
    torchrun), the train and val episodes of the clips under --root, decoded by --workers processes, and what the
    ranks exchange. Round k trains episodes start + k·world ... + world - 1, rank r the r-th of them; the gradients
    of --accumulate rounds make one optimizer step."""

    def __init__(self, config, world, rank, device, built, amp_dtype, clips, sampler, val_sampler, failures_path,
                 start, steps):
        self.config, self.world, self.rank, self.device = config, world, rank, device
        self.built, self.amp_dtype, self.clips, self.val_sampler = built, amp_dtype, clips, val_sampler
        self.failures_path = failures_path
        self.transform = TransformConfig(resize=(config.crop * 8 // 7,) * 2, crop=config.crop)
        self.provenance = _features_provenance(config, self.transform)
        self.features = features_entry(built.head, backbone_clip_shape(config))
        # Frozen BN and frozen stages leave parameters without gradients; DDP must not wait for them.
        self.wrapped = (torch.nn.parallel.DistributedDataParallel(built.model, find_unused_parameters=True)
                        if world > 1 else built.model)
        rounds = _rounds(config, start, world)
        self.stream = iter(self.decode(sampler, [start + k * world + rank for k in range(rounds)], train=True))
        self.steps = steps  # optimizer steps taken (a resumed run's included)
        self.micro = 0  # rounds whose gradients wait for the next optimizer step

    def decode(self, sampler, indices, train):
        """Decoded episodes ``indices`` of ``sampler``, the next ones prefetched by --workers processes."""
        frames = EpisodeFrames(self.clips, sampler, indices, self.config.frames, self.transform, train,
                               self.config.seed)
        # Pinned host memory lets the copy to the GPU overlap (non_blocking in forward).
        return torch.utils.data.DataLoader(frames, batch_size=None, num_workers=self.config.workers,
                                           collate_fn=_as_is, pin_memory=self.device.type == "cuda")

    def report(self, failures, episodes, phase):
        for failure in failures:
            append_csv(self.failures_path, FAILURE_FIELDS, {"episodes": episodes, "phase": phase, **failure})

    def mean_over_ranks(self, value):
        """The mean of a float over the ranks (every rank gets it)."""
        if self.world == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return total.item() / self.world

    def share_data_temperatures(self, head, pending):
        """temperature_init=data set each rank's τ from its own first episode (in the forward just run, when
        ``pending`` was true before it): rank 0's values now hold on every rank, so DDP's ranks stay equal."""
        if self.world > 1 and pending and not bool(head.temperature_pending):
            torch.distributed.broadcast(head.log_temperature.data, src=0)

    def agree(self, flag):
        """True on every rank only when ``flag`` is true on every rank (ranks skip together, or
        the others would wait for this rank's gradients forever)."""
        if self.world == 1:
            return flag
        agreed = torch.tensor(int(flag), device=self.device)
        torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MIN)
        return bool(agreed.item())

    def forward(self, model, loaded):
        support, support_labels, query, query_labels = (x.to(self.device, non_blocking=True) for x in loaded)
        return forward_episode(model, support, support_labels, query, self.amp_dtype), query_labels

    def train_step(self, episodes):
        config, head = self.config, self.built.head
        _, loaded, failures = next(self.stream)
        done = episodes + self.world
        self.report(failures, done, "train")
        last_micro = self.micro + 1 == config.accumulate or done == config.episodes
        result = None
        if self.agree(loaded is not None):
            sync = self.wrapped.no_sync() if self.world > 1 and not last_micro else contextlib.nullcontext()
            with sync:
                pending = bool(getattr(head, "temperature_pending", False))
                outputs, query_labels = self.forward(self.wrapped, loaded)
                self.share_data_temperatures(head, pending)
                loss = head.loss(outputs, query_labels)
                self.built.scaler.scale(loss / config.accumulate).backward()
            result = {"loss": self.mean_over_ranks(loss.item())}
        if last_micro:
            self.built.step(config, done)
            self.micro, self.steps = 0, self.steps + 1
        else:
            self.micro += 1  # only now: a round interrupted before this point leaves the state as whole as it was
        return result

    @torch.no_grad()
    def validate(self, episodes):
        """Accuracy (%) and 95% CI of view y over the first --val-episodes val episodes (test view);
        rank r scores episodes r, r + world, ... and the ranks pool their accuracies."""
        model = self.built.model
        model.eval()
        accs = []
        indices = range(self.rank, self.config.val_episodes, self.world)
        for _, loaded, failures in self.decode(self.val_sampler, indices, train=False):
            self.report(failures, episodes, "val")
            if loaded is not None:
                outputs, query_labels = self.forward(model, loaded)
                accs.append(episode_accuracies(outputs, query_labels)["y"])
        if self.world > 1:
            pooled = [None] * self.world
            torch.distributed.all_gather_object(pooled, accs)
            accs = [a for part in pooled for a in part]
        set_train_mode(model, self.config)
        return mean_and_ci(accs)

    def snapshot(self):
        config, built = self.config, self.built
        return dict(head=config.head, head_config=built.head.config_dict(), train_config=dataclasses.asdict(config),
                    provenance=self.provenance, features=self.features, init_backbone=built.init_provenance,
                    model=built.head.state_dict(),
                    backbone=built.backbone.state_dict(), optimizer=built.optimizer.state_dict(),
                    scheduler=built.scheduler.state_dict(), scaler=built.scaler.state_dict(), rng=rng_state(),
                    **built.model.norm.checkpoint_entries())

    def optimizer_steps(self):
        return self.steps

    def extra_columns(self):
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else ""
        lrs = dict.fromkeys(("lr", "backbone_lr"), "") | dict(zip(self.built.lr_names,
                                                                  self.built.scheduler.get_last_lr()))
        return {**lrs, "peak_gpu_mib": peak}

    def whole(self):
        return self.micro == 0


def finetune(config, progress=True):
    """Trains backbone + head; writes last.pt, best.pt, train_log.csv, val_log.csv, failures.csv
    (and tensorboard/ when tensorboard is installed) into config.out."""
    dataset = checked_dataset(config)
    if config.init_head:
        checked_init_head(config)  # refused before any model or run folder is made
    world, rank, device = _distributed_setup(config)
    if not config.resume:
        _rounds(config, 0, world)  # refused before the run folder is made (a resumed run checks from its episode)
    with RunFolder(config.out, config.resume, writer=rank == 0) as folder:
        episodes, steps, best = _finetune_in(folder, config, dataset, world, rank, device, progress)
    if world > 1:
        torch.distributed.barrier()  # rank 0's last checkpoint is written before anyone returns
        torch.distributed.destroy_process_group()
    return {"out": config.out, "episodes": episodes, "optimizer_steps": steps, "best_val_acc": best,
            "best": folder.best_path if best >= 0 else "", "last": folder.last_path, "rank": rank}


def _rounds(config, start, world):
    """Rounds of ``world`` episodes (one per rank) from episode ``start`` to --episodes."""
    if start < config.episodes and (config.episodes - start) % world:
        fits = start + (config.episodes - start) // world * world
        raise ConfigError(f"--episodes {config.episodes}: under torchrun every rank trains one episode per round, so "
                          f"the {config.episodes - start} episodes left to train must be a multiple of the {world} "
                          f"ranks; use --episodes {fits + world}" + (f" or {fits}" if fits > start else ""))
    return max(config.episodes - start, 0) // world


def _finetune_in(folder, config, dataset, world, rank, device, progress):
    state = None
    free = RESUMABLE_CHANGES | {"workers", "root"}
    if config.resume:
        state = folder.load_last()
        check_resumed_config(state["train_config"], config, folder.last_path, free)
    folder.record_config("finetune", config, state and state["train_config"], free)
    norm = finetune_input_norm(config, state, folder.last_path)
    refuse_double_normalisation(norm, config.head_options)
    clips = dataset.present()
    labels = np.array([c.label for c in clips])
    split = np.array([c.split for c in clips])
    sampler = EpisodeSampler(labels, split, "train", config.way, config.shot, config.queries,
                             seed=config.seed, class_names=dataset.classes)
    val_sampler = None
    if config.val_episodes > 0:  # the same val episodes as train-head's (same seed and sizes)
        val_sampler = EpisodeSampler(labels, split, "val", config.way, config.shot, config.val_queries,
                                     seed=config.seed + 1, class_names=dataset.classes)
    failures_name = f"failures-rank{rank}.csv" if world > 1 else "failures.csv"

    amp_dtype = amp_dtype_for(config, device)
    built = build_training(config, device, amp_dtype, norm)
    if state is None and config.stats_cache and norm.active:
        check_stats_cache(config, built.init_provenance)
    backbone, head, model = built.backbone, built.head, built.model
    optimizer, scheduler, scaler = built.optimizer, built.scheduler, built.scaler
    start, steps, best, stale = 0, 0, -1.0, 0
    if state is not None:
        load_module_state(head, state["model"], folder.last_path)
        load_module_state(backbone, state["backbone"], folder.last_path, "backbone")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        start, steps = trained_episodes(state), optimizer_steps(state)
        best, stale = state["best_val_acc"], state.get("stale_validations", 0)
        folder.trim_logs(start, own=(failures_name,))
    task = FinetuneTask(config, world, rank, device, built, amp_dtype, clips, sampler, val_sampler,
                        os.path.join(config.out, failures_name), start, steps)
    schedule = Schedule(config.episodes, config.log_every, config.val_every, config.checkpoint_every,
                        validating=val_sampler is not None, stride=world, patience=config.patience)
    set_train_mode(model, config)
    episodes, best, _ = run_episodes(folder, schedule, task, start, best, stale, progress=progress,
                                     desc=f"finetune {config.head}")
    return episodes, task.steps, best
