"""The paper's training protocol as a preset (``--preset paper``), where m3net's defaults differ, and each
head's reference training recipe (``--preset reference``).

Tang et al. 2023, §4.2: ImageNet-initialised ResNet-50, t = 8 frames, n = 4, d = 2048, random 224
crop + horizontal flip for training, SGD with lr 1e-4 for 60 000 episodes, lr x0.5 every 2 000,
test view resize 256 + centre crop 224, 6 000 test episodes. Where the paper is silent m3net makes
one documented choice. ``SETTINGS`` is the single table of all of it: the preset values come from
it and docs/reproducing.md's settings table is generated from it (tools/docs_reference.py settings_table).

``RECIPES`` holds how each trained head's own authors (or, for PAL, its re-implementation) train it, read
from their code (the file each value comes from is named in the recipe); ``train-head --preset reference``
trains a head that way and docs/reproducing.md's reference table is generated from it
(tools/docs_reference.py reference_table). Head options stay the head's defaults, which follow the same code
except the deviations each head's docstring lists.
"""
import dataclasses

from m3net.config import Settings, setting, settings
from m3net.errors import ConfigError

PRESETS = ("none", "paper", "reference")


@settings
class PresetSettings(Settings):
    """The --preset option finetune, train-head, evaluate and demo share."""

    preset: str = setting("none", "paper: the paper's §4.2 protocol where it states it, m3net's documented choices "
                          "where it is silent (docs/reproducing.md: settings); reference (train-head, demo): the "
                          "--head's own training recipe from its reference code (docs/reproducing.md: reference "
                          "recipes; M3Net's is the paper's). Options given still win.", choices=PRESETS)


@dataclasses.dataclass(frozen=True)
class Setting:
    stage: str  # "finetune", "train-head" or "evaluate": the config whose field it is
    option: str  # the config field
    paper: str  # what the paper states ("—" when it is silent)
    preset: object  # the value --preset paper sets
    why: str  # why the default differs, or why this choice where the paper is silent


SETTINGS = (
    Setting("finetune", "weights", "ImageNet ResNet-50 (§4.2)", "imagenet", "torchvision's IMAGENET1K_V1"),
    Setting("finetune", "frames", "8 (§4.2)", 8, ""),
    Setting("finetune", "crop", "224 (§4.2)", 224, ""),
    Setting("finetune", "episodes", "60 000 (§4.2)", 60_000,
            "default 10 000: a first end-to-end run on one GPU in hours, not a day"),
    Setting("finetune", "lr", "1e-4 (§4.2)", 1e-4, ""),
    Setting("finetune", "backbone_lr", "1e-4 (one lr, §4.2)", 1e-4,
            "default 1e-5: the pretrained trunk moves less than the new head when episodes are few"),
    Setting("finetune", "lr_step", "2 000 (§4.2)", 2_000, ""),
    Setting("finetune", "lr_gamma", "0.5 (§4.2)", 0.5, ""),
    Setting("finetune", "optimizer", "SGD (§4.2)", "sgd", ""),
    Setting("finetune", "momentum", "—", 0.9, "paper silent; the usual SGD momentum"),
    Setting("finetune", "weight_decay", "—", 5e-4, "paper silent; HyRSM's value on UCF101 and Kinetics (5e-5 on "
            "SSv2; TRX uses none)"),
    Setting("finetune", "freeze_bn", "—", True,
            "paper silent; episodes of 10-50 clips from 5 classes make poor BatchNorm batch statistics"),
    Setting("finetune", "queries", "—", 5, "paper silent; TRX trains with 5 per class (STRM's scripts mostly 4, "
            "HyRSM's configs 3 to 7)"),
    Setting("finetune", "init_head", "— (trained from ImageNet init)", "",
            "the preset starts the head from scratch; a train-head warm start is an option"),
    Setting("train-head", "episodes", "60 000 (§4.2)", 60_000, "train-head trains the head alone on frozen "
            "cached features: faster than the paper's end-to-end route, not its protocol (use finetune)"),
    Setting("train-head", "optimizer", "SGD (§4.2)", "sgd", ""),
    Setting("train-head", "lr", "1e-4 (§4.2)", 1e-4, ""),
    Setting("train-head", "lr_step", "2 000 (§4.2)", 2_000, ""),
    Setting("train-head", "lr_gamma", "0.5 (§4.2)", 0.5, ""),
    Setting("train-head", "queries", "—", 5, "paper silent; TRX trains with 5 per class (STRM's scripts mostly 4, "
            "HyRSM's configs 3 to 7)"),
    Setting("evaluate", "episodes", "6 000 (§4.2)", 6_000, ""),
    Setting("evaluate", "queries", "— (its CIs imply more than 1)", 5,
            "default 1 (cheaper); the CI cannot beat the binomial floor of N·q queries per episode"),
)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one head is trained by its reference code, as train-head options (``--preset reference``)."""

    head: str
    reference: str  # the repository (or paper) the values come from
    optimizer: str
    lr: float
    momentum: float  # SGD only
    weight_decay: float
    accumulate: int  # episodes (tasks) per optimizer step
    queries: int  # per class, in training episodes
    lr_step: int
    lr_gamma: float
    source: str  # where each value is set, and what differs
    # Head options the reference code implies (e.g. how it reduces the loss over queries); --head-opt wins.
    head_options: dict = dataclasses.field(default_factory=dict)


NO_DECAY = 1_000_000  # TRX's run.py --sch default: MultiStepLR(milestones=[1000000], gamma=0.1), never reached

RECIPES = (
    Recipe("m3net", "Tang et al. 2023, §4.2", "sgd", 1e-4, 0.9, 5e-4, 1, 5, 2_000, 0.5,
           "the paper's protocol (`--preset paper`): SGD lr 1e-4, x0.5 every 2 000 episodes; momentum, weight decay "
           "and queries are m3net's choices where the paper is silent"),
    Recipe("trx", "tobyperrett/trx", "sgd", 1e-3, 0.0, 0.0, 16, 5, NO_DECAY, 0.1,
           "run.py: --opt sgd (torch.optim.SGD(params, lr): no momentum, no weight decay), --learning_rate 0.001, "
           "--tasks_per_batch 16 (each task's loss divided by 16), --query_per_class 5, --sch 1000000; utils.py "
           "loss: a task's cross-entropy summed over its queries (loss_reduction=sum)",
           {"loss_reduction": "sum"}),
    Recipe("strm", "Anirudh257/strm", "sgd", 1e-3, 0.0, 0.0, 16, 4, NO_DECAY, 0.1,
           "run.py as TRX's (plain SGD, --tasks_per_batch 16, --sch 1000000, utils.py loss summed over queries: "
           "loss_reduction=sum, for both terms of CE(frame) + 0.1 CE(patch)); scripts/run_strm_ssv2.sh: -lr 0.001, "
           "--query_per_class 4 (run_strm_hmdb.sh and run_strm_ucf.sh: 4 queries at lr 1e-4; run_strm_kin.sh: 5 "
           "at 1e-4)",
           {"loss_reduction": "sum"}),
    Recipe("hyrsm", "alibaba-mmai-research/HyRSM", "adam", 1e-4, 0.0, 1e-3, 16, 7, 36_000, 0.1,
           "configs/projects/hyrsm/ssv2_full/HyRSM_SSv2_Full_1shot_v1.yaml: SOLVER BASE_LR 0.0001, QUERY_PER_CLASS 7 "
           "(3 in the 5-shot config), lr x0.1 from epoch 6 (x0.01 from 9) of STEPS_ITER 3000; "
           "runs/train_net_few_shot.py counts epoch floor(i/3000) + i/3000 per GPU, so x0.1 comes after 9 000 tasks "
           "on each of 4 GPUs: 36 000 (x0.01 after 60 000; here x0.1 every 36 000), no warm-up here (the config "
           "warms up from 2e-5 over its first 3 000 tasks per GPU); models/utils/optimizer.py: Adam with "
           "OPTIMIZER.WEIGHT_DECAY 1e-3 (configs/pool/run/training/finetune.yaml; the configs' SOLVER WEIGHT_DECAY "
           "5e-5 is never read), 0 on norm layers (not here); steps every BATCH_SIZE_PER_TASK 4 tasks on each of "
           "NUM_GPUS 4, each task's mean cross-entropy / 4 and DDP's mean over GPUs: the mean of 16 tasks"),
    Recipe("pal", "tobyperrett/few-shot-action-recognition (CNN_PAL)", "sgd", 1e-4, 0.0, 0.0, 1, 5, 3_000, 0.1,
           "scripts/examples.md: --method pal --tasks_per_batch 1 -lr 0.0001 --sch 3000 6000 (here x0.1 every "
           "3 000); run.py: --opt sgd (plain SGD), --query_per_class 5; model.py CNN_PAL: logits the bare cosine "
           "(temperature=1), mean cross-entropy + 1 x the prototype-centred term",
           {"temperature": 1.0}),
)
RECIPE_OPTIONS = ("optimizer", "lr", "momentum", "weight_decay", "accumulate", "queries", "lr_step", "lr_gamma")


def recipe(head):
    """The reference Recipe of ``head``, or a ConfigError naming the heads that have one."""
    found = next((r for r in RECIPES if r.head == head), None)
    if found is None:
        raise ConfigError(f"--preset reference: no reference recipe for --head {head}; heads with one: "
                          f"{', '.join(r.head for r in RECIPES)} (parameter-free heads are not trained)")
    return found


def preset_values(stage, name, head=None):
    """{field: value} that ``--preset name`` sets for ``stage`` ({} for "none"); "reference" needs the ``head``."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name}: expected one of {', '.join(PRESETS)}")
    if name == "none":
        return {}
    if name == "reference":
        if stage != "train-head":
            raise ConfigError(f"--preset reference: the heads' reference recipes are train-head settings (and the "
                              f"demo's); {stage} takes --preset paper")
        found = recipe(head)
        return {**{option: getattr(found, option) for option in RECIPE_OPTIONS}, "head_options": found.head_options}
    return {s.option: s.preset for s in SETTINGS if s.stage == stage}


def with_preset(stage, options, explicit=()):
    """``options`` (a config's keyword arguments, with "preset") where the preset's values replace every
    option not in ``explicit`` (those the user gave): options given on the command line still win. The
    preset's head options join ``options["head_options"]`` (typed), whose own keys win."""
    values = preset_values(stage, options.get("preset", "none"), options.get("head"))
    preset_head = values.pop("head_options", {})
    merged = {**options, **{k: v for k, v in values.items() if k not in explicit}}
    if preset_head:
        from m3net.model.registry import head_options

        merged["head_options"] = {**head_options(options["head"], preset_head), **options.get("head_options", {})}
    return merged
