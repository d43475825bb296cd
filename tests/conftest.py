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


@pytest.fixture(scope="module")
def aligned_head():
    """The tiny trainable "test-aligned" head of helpers_cache, registered for one test module."""
    from helpers_cache import aligned_head_registered

    with aligned_head_registered() as head:
        yield head
