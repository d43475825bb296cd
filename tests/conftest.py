"""Shared test setup.

Without a GPU the Triton kernels run under the Triton interpreter: TRITON_INTERPRET must be set
before the kernels are defined (first import of m3net.kernels), so it is set here, before any
test module is imported. On CUDA machines the compiled kernels are used instead.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
