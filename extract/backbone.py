"""ImageNet ResNet-50 cut before the average pool: a frame (3, 224, 224) -> a map (2048, 7, 7).

The architecture is torchvision's ``resnet50`` (v1.5: stride on the 3x3 conv), written here with
the very same parameter names so torchvision's ImageNet checkpoints load unchanged. It is not
imported from torchvision because torchvision's PyPI wheels ship a CUDA-linked extension that
fails to import next to a CPU-only torch; where torchvision does import, a test checks that both
give identical outputs for the same weights.

Weights:
    imagenet / imagenet-v1   torchvision ResNet50_Weights.IMAGENET1K_V1 (the paper's)
    imagenet-v2              torchvision ResNet50_Weights.IMAGENET1K_V2
    random                   seeded random init, for tests and the offline demo (no ImageNet)
    PATH                     a local state dict (a plain dict of tensors, or a checkpoint with
                             a ``backbone`` / ``state_dict`` / ``model`` entry), checked on load
"""
import hashlib
import os
import warnings

import torch
from torch import nn

from m3net.errors import WeightsError
from m3net.runtime import load_torch_file

# Files torchvision downloads into <torch hub dir>/checkpoints.
IMAGENET_FILES = {
    "imagenet-v1": ("resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "imagenet-v2": ("resnet50-11ad3fa6.pth", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"),
}
WEIGHT_ALIASES = {"imagenet": "imagenet-v1"}
FEATURE_CHANNELS = 2048




class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Trunk(nn.Module):
    """ResNet-50 without ``avgpool`` and ``fc``: (B, 3, H, W) -> (B, 2048, H/32, W/32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes = 64
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, stride=2)
        self.layer4 = self._make_layer(512, 3, stride=2)
        self._init_weights()

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self._inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self._inplanes, planes, stride, downsample)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self):
        # torchvision's default init (kaiming fan_out, BN weight 1 / bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self):
        """The trunk's stages in order, for freezing up to a stage or checkpointing each."""
        return [
            nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool),
            self.layer1, self.layer2, self.layer3, self.layer4,
        ]

    def forward(self, x):
        for stage in self.stages():
            x = stage(x)
        return x


class RandomWeightsWarning(UserWarning):
    """--weights random: features without ImageNet knowledge (filter it by this class, e.g. in timing runs)."""


def canonical_weights_name(weights):
    return WEIGHT_ALIASES.get(weights, weights)


def hub_checkpoint_dir():
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights_file(weights):
    """Path of the state dict for ``weights`` (None for ``random``), or a WeightsError."""
    name = canonical_weights_name(weights)
    if name == "random":
        return None
    if name in IMAGENET_FILES:
        filename, url = IMAGENET_FILES[name]
        path = os.path.join(hub_checkpoint_dir(), filename)
        if os.path.isfile(path):
            return path
        raise WeightsError(
            f"--weights {weights}: {filename} is not in the torch hub cache ({hub_checkpoint_dir()}) "
            f"and m3net never downloads. On a machine with internet run\n"
            f"    curl -L -o {filename} {url}\n"
            f"and copy the file to {path} (or set TORCH_HOME to a folder whose hub/checkpoints "
            f"holds it), or pass --weights PATH to a local ResNet-50 state dict."
        )
    if os.path.isfile(weights):
        return weights
    raise WeightsError(
        f"--weights {weights!r}: not a file, and not one of imagenet, imagenet-v1, imagenet-v2, random."
    )


def _extract_state_dict(obj, path):
    """Accept a plain state dict or a checkpoint that nests one (finetune checkpoints do)."""
    if isinstance(obj, dict):
        for key in ("backbone", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return _extract_state_dict(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise WeightsError(f"--weights {path}: expected a ResNet-50 state dict (name -> tensor), got {type(obj).__name__}.")


def load_state_dict_file(path):
    obj = load_torch_file(path, WeightsError, "--weights")
    state = _extract_state_dict(obj, path)
    # Accept torchvision full-model dicts (drop the classifier) and DDP / module prefixes.
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def build_backbone(weights="random", seed=0):
    """The ResNet-50 trunk in eval mode with ``weights`` loaded; returns (model, provenance).

    provenance: {"weights": name or path, "weights_sha256": hex digest or "random-seed-<seed>"}.
    """
    name = canonical_weights_name(weights)
    path = resolve_weights_file(weights)
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ResNet50Trunk()
        warnings.warn(
            "--weights random: the backbone is randomly initialised; its features carry no ImageNet "
            "knowledge (fine for tests and the offline demo, meaningless for real results).",
            RandomWeightsWarning,
            stacklevel=2,
        )
        return model.eval(), {"weights": "random", "weights_sha256": f"random-seed-{seed}"}
    model = ResNet50Trunk()
    state = load_state_dict_file(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise WeightsError(
            f"--weights {weights}: not a ResNet-50 state dict: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(wrong_shape)} with the wrong shape (e.g. {wrong_shape[:3]})."
        )
    model.load_state_dict(state)
    label = name if name in IMAGENET_FILES else os.path.abspath(path)
    return model.eval(), {"weights": label, "weights_sha256": file_sha256(path)}
