"""The paper's training protocol as a preset (``--preset paper``), and where m3net's defaults differ.

Tang et al. 2023, §4.2: ImageNet-initialised ResNet-50, t = 8 frames, n = 4, d = 2048, random 224
crop + horizontal flip for training, SGD with lr 1e-4 for 60 000 episodes, lr x0.5 every 2 000,
test view resize 256 + centre crop 224, 6 000 test episodes. Where the paper is silent m3net makes
one documented choice. ``SETTINGS`` is the single table of all of it: the preset values come from
it and the README's deviation table is generated from it (m3net.readme_figures.settings_table).
"""
import dataclasses

from m3net.config import Settings, setting, settings
from m3net.errors import ConfigError

PRESETS = ("none", "paper")


@settings
class PresetSettings(Settings):
    """The --preset option finetune, train-head and evaluate share."""

    preset: str = setting("none", "paper: the paper's §4.2 protocol where it states it, m3net's documented choices "
                          "where it is silent (README: settings table); options given still win.", choices=PRESETS)


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
    Setting("finetune", "weight_decay", "—", 5e-4, "paper silent; TRX's and HyRSM's value"),
    Setting("finetune", "freeze_bn", "—", True,
            "paper silent; episodes of 10-50 clips from 5 classes make poor BatchNorm batch statistics"),
    Setting("finetune", "queries", "—", 5, "paper silent; 5 per class as TRX, STRM and HyRSM train"),
    Setting("finetune", "init_head", "— (trained from ImageNet init)", "",
            "the preset starts the head from scratch; a train-head warm start is an option"),
    Setting("train-head", "episodes", "60 000 (§4.2)", 60_000, "train-head trains the head alone on frozen "
            "cached features: faster than the paper's end-to-end route, not its protocol (use finetune)"),
    Setting("train-head", "optimizer", "SGD (§4.2)", "sgd", ""),
    Setting("train-head", "lr", "1e-4 (§4.2)", 1e-4, ""),
    Setting("train-head", "lr_step", "2 000 (§4.2)", 2_000, ""),
    Setting("train-head", "lr_gamma", "0.5 (§4.2)", 0.5, ""),
    Setting("train-head", "queries", "—", 5, "paper silent; 5 per class as TRX, STRM and HyRSM train"),
    Setting("evaluate", "episodes", "6 000 (§4.2)", 6_000, ""),
    Setting("evaluate", "queries", "— (its CIs imply more than 1)", 5,
            "default 1 (cheaper); the CI cannot beat the binomial floor of N·q queries per episode"),
)


def preset_values(stage, name):
    """{field: value} that ``--preset name`` sets for ``stage`` ({} for "none")."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name}: expected one of {', '.join(PRESETS)}")
    if name == "none":
        return {}
    return {s.option: s.preset for s in SETTINGS if s.stage == stage}


def with_preset(stage, options, explicit=()):
    """``options`` (a config's keyword arguments, with "preset") where the preset's values replace every
    option not in ``explicit`` (those the user gave): options given on the command line still win."""
    values = preset_values(stage, options.get("preset", "none"))
    return {**options, **{k: v for k, v in values.items() if k not in explicit}}
