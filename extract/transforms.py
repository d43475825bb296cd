"""Frame transforms, torch only (torchvision is not required).

Workers turn decoded frames into uint8 crops, (T, 3, crop, crop): a quarter of the bytes of
float32 through pinned memory to the GPU; the backbone side converts to float and normalises.
    test view   resize to 256x256, centre crop 224
    train view  resize to 256x256, random crop 224 (one offset per view, shared by its frames),
                horizontal flip with probability 1/2
Resizing is bilinear with antialiasing, as torchvision's Resize on tensors, then rounded back to
uint8 as a PIL-based pipeline would.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformConfig:
    resize: tuple = (256, 256)  # (height, width)
    crop: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD


def resize_frames(frames, size):
    """uint8 (T, H, W, 3) array or tensor -> uint8 (T, 3, size[0], size[1]).

    One frame at a time: only one frame is ever in float32 at full size (8 frames of 4000x4000
    at once would take 1.5 GB, 3 GB with interpolate's temporaries); per-frame interpolation gives
    the same values as the batched one. Frames already at ``size`` (frame folders of `m3net frames`)
    come back as a view: the crop copies them once.
    """
    frames = torch.as_tensor(frames)
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames.permute(0, 3, 1, 2)
    out = torch.empty((frames.shape[0], 3, *size), dtype=torch.uint8)
    for t, frame in enumerate(frames):
        x = frame.permute(2, 0, 1)[None].float()  # (1, 3, H, W)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        out[t] = x[0].round_().clamp_(0, 255).to(torch.uint8)
    return out


def crop_view(frames, config, top, left, flip=False):
    """uint8 (T, H, W, 3) -> uint8 (T, 3, crop, crop): resize, crop at (top, left), optional flip."""
    x = resize_frames(frames, config.resize)[..., top:top + config.crop, left:left + config.crop]
    if x.shape[-1] != config.crop or x.shape[-2] != config.crop:
        raise ValueError(f"crop {config.crop} at ({top}, {left}) does not fit resize {config.resize}")
    return x.flip(-1).contiguous() if flip else x.contiguous()


def test_view(frames, config=TransformConfig()):
    height, width = config.resize
    return crop_view(frames, config, (height - config.crop) // 2, (width - config.crop) // 2)


def train_view(frames, rng, config=TransformConfig()):
    """Random crop + flip; ``rng`` a numpy Generator (derived from the seed and the clip)."""
    height, width = config.resize
    top = int(rng.integers(0, height - config.crop + 1))
    left = int(rng.integers(0, width - config.crop + 1))
    return crop_view(frames, config, top, left, flip=bool(rng.integers(0, 2)))


def normalise(x, config=TransformConfig(), dtype=torch.float32):
    """uint8 (..., 3, H, W) on any device -> float ``dtype`` in ImageNet mean/std units."""
    mean = torch.tensor(config.mean, device=x.device, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(config.std, device=x.device, dtype=torch.float32).view(3, 1, 1)
    return ((x.float() / 255.0 - mean) / std).to(dtype)
