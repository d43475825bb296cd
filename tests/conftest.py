"""Shared test setup.

Without a GPU the Triton kernels run under the Triton interpreter: TRITON_INTERPRET must be set
before the kernels are defined (first import of m3net.kernels), so it is set here, before any
test module is imported. On CUDA machines the compiled kernels are used instead.
"""
import os
import sys

import pytest
import torch
from helpers_tools import TOOLS

# The repository's tools (tools/*.py: the docs' generated sections, the GPU session, the static sm_90 table, the
# benchmark's validator) are scripts, not part of the installed package: their tests import them as top-level
# modules from there, as `python tools/NAME.py` does. Only tools/ joins sys.path, never the repository root,
# so m3net is always the installed package.
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N`: one thread per worker, so N workers share N cores instead of oversubscribing them
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A small generated cache whose classes differ only in temporal order (helpers_cache.order_only_cache),
    shared read-only by every test session-wide."""
    from helpers_cache import order_only_cache

    return str(order_only_cache(tmp_path_factory.mktemp("cache") / "order.h5"))


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    """A tiny generated benchmark on disk (3 classes per split, 3 clips each, 16 frames of 64x64), shared
    read-only by the tests that decode clips."""
    from m3net.data.synthetic import SyntheticConfig, generate_synthetic

    root = tmp_path_factory.mktemp("bench")
    generate_synthetic(str(root), SyntheticConfig(train_classes=3, val_classes=3, test_classes=3, clips_per_class=3,
                                                  frames=16, size=64, family_size=3), progress=False)
    return str(root)


@pytest.fixture(scope="module")
def aligned_head():
    """The tiny trainable "test-aligned" head of helpers_cache, registered for one test module."""
    from helpers_cache import aligned_head_registered

    with aligned_head_registered() as head:
        yield head


@pytest.fixture(scope="session")
def predictor_run(tmp_path_factory, bench):
    """The bench fixture extracted with a random-weight backbone at 4 frames and 64-pixel crops (a ResNet-50
    at 64 pixels is cheap on a CPU) and an m3net head (proj_dim=16) trained on it for 2 episodes, shared
    read-only by the tests that predict clips: SimpleNamespace(root, cache, checkpoint)."""
    import types

    from m3net.extract.loop import ExtractConfig, extract_dataset
    from m3net.train.train_head import TrainConfig, train_head

    base = tmp_path_factory.mktemp("predictor")
    cache = str(base / "cache.h5")
    extract_dataset(ExtractConfig(dataset="folder", root=bench, out=cache, weights="random", frames=4, crop=64,
                                  batch_size=4, workers=0, device="cpu", progress=False))
    run = train_head(TrainConfig(cache=cache, out=str(base / "run"), head="m3net", head_options={"proj_dim": 16},
                                 way=3, shot=1, queries=1, episodes=2, val_every=2, val_episodes=1, device="cpu"),
                     progress=False)
    return types.SimpleNamespace(root=bench, cache=cache, checkpoint=run["best"])
