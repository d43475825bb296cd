"""Facts about where code runs, shared by every stage: device choice and provenance stamps."""
import os
import platform
import subprocess

import torch

from m3net._version import __version__
from m3net.errors import ConfigError


def resolve_device(name="auto"):
    """``auto`` -> cuda when available, else cpu; an unavailable CUDA device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def git_sha():
    """The source checkout's commit (``-dirty`` with local changes), or the package version when
    m3net runs from an installed copy."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                                   timeout=10)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return f"m3net-{__version__}"


def versions():
    info = {"m3net": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
    return info


def synchronize(device):
    """Wait for queued CUDA work, so that wall-clock timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_torch_file(path, error, what, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; an unreadable file or one holding pickled Python objects
    raises ``error`` naming ``what`` (the option) and the file, without torch's advice to load it
    with weights_only=False (that would run whatever code the file carries)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unpickl" in type(err).__name__:
            reason = ("it holds pickled Python objects besides tensors and plain values; m3net refuses to "
                      "unpickle them (that could run code)")
        else:
            reason = f"not a readable torch file ({first})"
        raise error(f"{what} {path}: {reason}") from None
