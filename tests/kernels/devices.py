"""What the kernel tests share: the devices a kernel runs on here, and a relative error."""

from __future__ import annotations

import pytest
import torch

from tnas.kernels.common import INTERPRET

# CPU under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without CUDA), CUDA
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, in float32."""
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()
