"""``m3net finetune``: backbone (ResNet-50 trunk) and head trained end to end on decoded frames.

Episodes come from the same EpisodeSampler as ``train-head``; episode ``i`` and every random crop,
flip and frame choice in it are pure functions of (seed, i, clip), and checkpoints carry both
models, optimizer, scheduler, RNG state and step, so ``--resume`` continues exactly.
A clip that cannot be decoded is replaced by another clip of its class (or the episode is
skipped) and written to failures.csv; the run never stops for one bad file.

Under torchrun (WORLD_SIZE > 1) backbone and head are wrapped in DistributedDataParallel; rank r
trains episode step·world + r, so one step averages the gradients of ``world`` episodes; rank 0
writes checkpoints and logs, each rank its own failures-rank<r>.csv.
"""
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from m3net.data.datasets import load_dataset
from m3net.data.episodes import EpisodeSampler
from m3net.extract.backbone import build_backbone
from m3net.extract.sampling import sample_indices
from m3net.extract.transforms import TransformConfig, normalise, test_view, train_view
from m3net.extract.video import Clip
from m3net.model import build_head
from m3net.runtime import resolve_device
from m3net.train.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from m3net.train.loop import append_csv


@dataclass
class FinetuneConfig:
    dataset: str
    root: str
    out: str = "runs/finetune"
    weights: str = "imagenet"
    head: str = "m3net"
    head_options: dict = field(default_factory=dict)
    init_head: str = ""  # a train-head checkpoint (best.pt) to start the head from
    way: int = 5
    shot: int = 1
    queries: int = 5
    frames: int = 8
    crop: int = 224  # resize to crop·8/7 (256 for 224), as the extraction transform
    episodes: int = 10_000
    accumulate: int = 1  # episodes whose gradients are summed (averaged) per optimizer step
    lr: float = 1e-4
    backbone_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: int = 2_000  # optimizer steps
    lr_gamma: float = 0.5
    freeze_stages: int = 0  # the first N trunk stages (stem, layer1, ...) keep their weights
    # Episodes of 10-50 clips from few classes give BatchNorm batch statistics unlike ImageNet's;
    # frozen BN (eval mode, affine fixed) keeps the pretrained statistics, as most video fine-tuning does.
    freeze_bn: bool = True
    amp: str = "auto"  # auto (bf16 on CUDA if supported, else fp16) | bf16 | fp16 | off
    # Recomputes each trunk stage in backward; with BN not frozen its running statistics then move twice per step.
    checkpointing: bool = False
    workers: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    resume: bool = False


TRAIN_FIELDS = ("step", "loss", "lr", "backbone_lr", "episodes_per_s", "peak_gpu_mib", "skipped_episodes")
FAILURE_FIELDS = ("step", "clip_id", "path", "error")


class EpisodeClips(torch.utils.data.Dataset):
    """Item i of one episode: (uint8 (T, 3, crop, crop) frames or None, error message)."""

    def __init__(self, clips, rows, frames, transform, train, seed, step):
        self.clips, self.rows, self.frames, self.transform = clips, rows, frames, transform
        self.train, self.seed, self.step = train, seed, step

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = int(self.rows[i])
        rng = np.random.default_rng([self.seed, self.step, row])
        try:
            clip = Clip(self.clips[row].path)
            frames = clip.read(sample_indices(len(clip), self.frames, train=self.train, rng=rng))
            view = train_view(frames, rng, self.transform) if self.train else test_view(frames, self.transform)
            return view, ""
        except Exception as err:  # a bad file costs that clip, never the run
            return None, f"{type(err).__name__}: {err}"


def _collate(items):
    return items


class Finetuner(torch.nn.Module):
    """Backbone + head: clips (B, T, 3, H, W) -> feature maps (B, T, h, w, C) -> head outputs."""

    def __init__(self, backbone, head, checkpointing):
        super().__init__()
        self.backbone, self.head, self.checkpointing = backbone, head, checkpointing

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
        maps = self.features(torch.cat([support, query]))
        return self.head(maps[:s].float(), support_labels, maps[s:].float())


def _amp_dtype(config, device):
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[config.amp]


def _freeze(backbone, config):
    stages = backbone.stages()
    if not 0 <= config.freeze_stages <= len(stages):
        raise ValueError(f"--freeze-stages {config.freeze_stages}: expected 0..{len(stages)}")
    for stage in stages[: config.freeze_stages]:
        for p in stage.parameters():
            p.requires_grad_(False)
    if config.freeze_bn:
        for m in backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)


def _set_train(model, config):
    model.train()
    if config.freeze_bn:
        for m in model.backbone.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()


def _load_episode(dataset, sampler, episode, config, step, transform, failures_path):
    """Decoded (support, support_labels, query, query_labels), or None when a class runs out of clips."""
    rows = {"support": list(episode.support_rows), "query": list(episode.query_rows)}
    labels = {"support": list(episode.support_labels), "query": list(episode.query_labels)}
    used = set(rows["support"]) | set(rows["query"])
    out = {}
    for part in ("support", "query"):
        loader = torch.utils.data.DataLoader(
            EpisodeClips(dataset.clips, rows[part], config.frames, transform, True, config.seed, step),
            batch_size=len(rows[part]), num_workers=config.workers, collate_fn=_collate)
        items = next(iter(loader))
        views = []
        for i, (view, error) in enumerate(items):
            while view is None:
                clip = dataset.clips[int(rows[part][i])]
                append_csv(failures_path, FAILURE_FIELDS,
                            {"step": step, "clip_id": clip.clip_id, "path": clip.path, "error": error})
                spare = [r for r in sampler.by_class[int(episode.classes[labels[part][i]])] if r not in used]
                if not spare:
                    return None
                rows[part][i] = spare[0]
                used.add(spare[0])
                view, error = EpisodeClips(dataset.clips, [spare[0]], config.frames, transform, True,
                                           config.seed, step)[0]
            views.append(view)
        out[part] = torch.stack(views)  # (B, T, 3, crop, crop) uint8
    return out["support"], torch.as_tensor(labels["support"]), out["query"], torch.as_tensor(labels["query"])


def _initial_head(config):
    saved = load_checkpoint(config.init_head)
    if saved["head"] != config.head:
        raise ValueError(f"--init-head {config.init_head}: a {saved['head']!r} head, not --head {config.head!r}")
    shape = {k: saved["head_config"].get(k) for k in ("feature_dim", "num_frames")}
    if shape != {"feature_dim": 2048, "num_frames": config.frames}:
        raise ValueError(f"--init-head {config.init_head}: trained on {shape}, "
                         f"this run feeds feature_dim 2048 and --frames {config.frames}")
    head = build_head(saved["head"], **saved["head_config"])
    head.load_state_dict(saved["model"])
    return head


def finetune(config, progress=True):
    """Trains backbone + head; writes last.pt, train_log.csv, failures.csv into config.out."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = resolve_device(config.device)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    os.makedirs(config.out, exist_ok=True)
    last_path = os.path.join(config.out, "last.pt")
    failures_path = os.path.join(config.out, f"failures-rank{rank}.csv" if world > 1 else "failures.csv")
    if config.accumulate < 1 or config.checkpoint_every % config.accumulate:
        raise ValueError(f"--accumulate {config.accumulate}: expected >= 1 and dividing --checkpoint-every "
                         f"{config.checkpoint_every} (checkpoints fall between optimizer steps)")
    state = None
    if config.resume:
        state = load_checkpoint(last_path)
    elif os.path.exists(last_path):
        raise FileExistsError(f"{last_path} exists: pass --resume to continue that run, or choose another --out")

    dataset = load_dataset(config.dataset, config.root)
    labels = np.array([c.label for c in dataset.clips])
    split = np.array([c.split for c in dataset.clips])
    sampler = EpisodeSampler(labels, split, "train", config.way, config.shot, config.queries,
                             seed=config.seed, class_names=dataset.classes)
    transform = TransformConfig(resize=(config.crop * 8 // 7,) * 2, crop=config.crop)

    backbone, provenance = build_backbone(config.weights, seed=config.seed)
    _freeze(backbone, config)
    torch.manual_seed(config.seed)  # head init
    if config.init_head:
        head = _initial_head(config)
    else:
        head = build_head(config.head, feature_dim=2048, num_frames=config.frames, **config.head_options)
    model = Finetuner(backbone, head, config.checkpointing).to(device)
    # Frozen BN and frozen stages leave parameters without gradients; DDP must not wait for them.
    wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    groups = [{"params": [p for p in head.parameters() if p.requires_grad], "lr": config.lr},
              {"params": [p for p in backbone.parameters() if p.requires_grad], "lr": config.backbone_lr}]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    amp_dtype = _amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    step = 0
    if state is not None:
        head.load_state_dict(state["model"])
        backbone.load_state_dict(state["backbone"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        step = state["step"]

    def snapshot():
        return dict(head=config.head, head_config=head.config_dict(), train_config=dataclasses.asdict(config),
                    provenance=provenance, model=head.state_dict(), backbone=backbone.state_dict(),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                    rng=rng_state(), step=step)

    _set_train(model, config)
    skipped, window_loss, window_count, start = 0, 0.0, 0, time.perf_counter()
    bar = tqdm(total=config.episodes, initial=step, disable=not progress or rank > 0, desc=f"finetune {config.head}", unit="ep")
    while step < config.episodes:
        index = step * world + rank
        loaded = _load_episode(dataset, sampler, sampler.episode(index), config, index, transform, failures_path)
        usable = loaded is not None
        if world > 1:  # every rank skips together, or the others would wait for its gradients forever
            flag = torch.tensor(int(usable), device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            usable = bool(flag.item())
        if not usable:
            skipped += 1
        else:
            support, support_labels, query, query_labels = (x.to(device, non_blocking=True) for x in loaded)
            last_micro = (step + 1) % config.accumulate == 0 or step + 1 == config.episodes
            sync = wrapped.no_sync() if world > 1 and not last_micro else contextlib.nullcontext()
            with sync, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                outputs = wrapped(normalise(support), support_labels, normalise(query))
                loss = head.loss(outputs, query_labels)
                scaler.scale(loss / config.accumulate).backward()
            window_loss += loss.item()
            window_count += 1
        step += 1
        if step % config.accumulate == 0 or step == config.episodes:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        bar.update(1)
        if rank == 0 and (step % config.log_every == 0 or step == config.episodes):
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else ""
            append_csv(os.path.join(config.out, "train_log.csv"), TRAIN_FIELDS, {
                "step": step, "loss": window_loss / max(window_count, 1), "lr": scheduler.get_last_lr()[0],
                "backbone_lr": scheduler.get_last_lr()[-1],
                "episodes_per_s": window_count / (time.perf_counter() - start), "peak_gpu_mib": peak,
                "skipped_episodes": skipped})
            window_loss, window_count, start = 0.0, 0, time.perf_counter()
        if rank == 0 and (step % config.checkpoint_every == 0 or step == config.episodes):
            save_checkpoint(last_path, **snapshot())
    bar.close()
    if world > 1:
        torch.distributed.barrier()  # rank 0's last checkpoint is written before anyone returns
        torch.distributed.destroy_process_group()
    return {"out": config.out, "step": step, "last": last_path}
