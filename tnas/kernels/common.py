"""What every kernel file shares: whether Triton can take a tensor, and autotuning whose tuned
configs are cached per device.

The kernels run on CUDA, and on CPU under Triton's interpreter (`TRITON_INTERPRET=1`, read when
a kernel module is first imported), which is how their tests run without a GPU. Tuned configs
go through `triton.autotune(..., cache_results=True)`: Triton stores the timings on disk (under
`TRITON_CACHE_DIR`, default `~/.triton/cache`) keyed by the kernel's source, the tuning key and
the GPU target, so each device type tunes once. Under the interpreter timing means nothing, so
only the first config of each list is used.

>>> runs_on(__import__("torch").zeros(1)) == INTERPRET
True
"""

from __future__ import annotations

import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def runs_on(tensor: torch.Tensor) -> bool:
    """Whether the Triton kernels can take `tensor`: on CUDA, or on CPU under the interpreter."""
    return tensor.is_cuda or (INTERPRET and tensor.device.type == "cpu")


def autotune(configs: list[triton.Config], key: list[str], **kwargs):
    """`triton.autotune` over `configs` keyed by the `key` arguments, with the tuned config
    cached on disk per device; one config under the interpreter."""
    return triton.autotune(
        configs=configs[:1] if INTERPRET else configs, key=key, cache_results=True, **kwargs
    )


def require(condition: bool, message: str) -> None:
    """Raise `ValueError(message)` unless `condition`: the host wrappers' one-line argument
    checks (shapes, dtypes, devices)."""
    if not condition:
        raise ValueError(message)


__all__ = ["INTERPRET", "autotune", "require", "runs_on"]
