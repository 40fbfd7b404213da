"""Cutting a submodel out of a supernet, and supernet checkpoints.

`extract(supernet, sub)` builds `build_model(sub.config)`, an ordinary dense model, and copies
the supernet's slices into it; `tnas.nn.checkpoint.save_model` writes it as `model.safetensors`
plus `config.json` and `tnas.load_model` reads it back with no supernet code.

A supernet checkpoint is one safetensors file: the supernet's tensors, and in its header a
JSON object `tnas.supernet` with the supernet config, the space it was built from and the
training step. Nothing is unpickled on load.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from tnas.elastic import Supernet
>>> from tnas.space import ArchConfig, LayerConfig
>>> big = ArchConfig(d_model=32, n_layers=3, vocab_size=64, max_seq_len=16,
...                  layers=(LayerConfig(n_heads=4, ffn_dim=128),) * 3)
>>> supernet = Supernet(big).eval()
>>> sub = supernet.submodel(ffn_dim=[32, 128], n_heads=[2, 4])
>>> model = extract(supernet, sub)
>>> tokens = torch.randint(0, 64, (2, 16))
>>> torch.allclose(model(tokens), supernet(tokens, sub), atol=1e-5)
True
>>> path = Path(tempfile.mkdtemp()) / "supernet.safetensors"
>>> save_supernet(supernet, path)
>>> load_supernet(path).config == big
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from tnas.elastic.submodel import NESTED_HEAD_MIXERS, Submodel, head_size
from tnas.elastic.supernet import Supernet
from tnas.nn.checkpoint import (
    CheckpointError,
    check_size,
    json_header,
    load_tensors,
    read_safetensors,
    save_model,
    shared_names,
    write_safetensors,
)
from tnas.nn.model import TnasModel, build_model
from tnas.space.config import ArchConfig, ConfigError

HEADER_KEY = "tnas.supernet"
FORMAT_VERSION = 1


def _cut(name: str, tensor: Tensor, layer, big, head_dim: int) -> Tensor:
    """Submodel block tensor `name` from the supernet block's: the FFN's first `ffn_dim` hidden
    units; the first `n_heads` heads of the Q, K and V row blocks (and their depthwise conv
    taps) and the matching columns of the output projection; anything else whole."""
    if name in ("ffn.up.weight", "ffn.gate.weight"):
        return tensor[: layer.ffn_dim]
    if name == "ffn.down.weight":
        return tensor[:, : layer.ffn_dim]
    if big.mixer not in NESTED_HEAD_MIXERS or layer.n_heads == big.n_heads:
        return tensor
    width = layer.n_heads * head_dim
    if name in ("mixer.qkv.weight", "mixer.dconv.weight"):
        blocks = tensor.view(3, big.n_heads * head_dim, *tensor.shape[1:])  # Q, K, V
        return blocks[:, :width].reshape(3 * width, *tensor.shape[1:])
    if name == "mixer.out.weight":
        return tensor[:, :width]
    return tensor


def sliced_tensors(supernet: Supernet, sub: Submodel) -> dict[str, Tensor]:
    """The submodel's state dict, cut from the supernet's (slices; Q, K, V rows regathered)."""
    state = supernet.state_dict()
    tensors = {name: t for name, t in state.items() if not name.startswith("blocks.")}
    for i, (layer, index) in enumerate(zip(sub.config.layers, sub.kept, strict=True)):
        big = supernet.config.layers[index]
        head_dim = head_size(supernet.config, big) if big.uses_heads else 0
        prefix = f"blocks.{index}."
        for name, tensor in state.items():
            if name.startswith(prefix):
                local = name[len(prefix) :]
                tensors[f"blocks.{i}.{local}"] = _cut(local, tensor, layer, big, head_dim)
    return tensors


def extract(
    supernet: Supernet, sub: ArchConfig | Submodel, kept: Sequence[int] | None = None
) -> TnasModel:
    """A dense `TnasModel` of `build_model(sub.config)` holding the supernet's slices (copied);
    its outputs equal `supernet(tokens, sub)`. Eval mode, on the supernet's device and dtype."""
    sub = supernet.resolve(sub, kept)
    model = build_model(sub.config)
    reference = next(supernet.parameters())
    model = model.to(device=reference.device, dtype=reference.dtype)
    tensors = sliced_tensors(supernet, sub)
    for name in shared_names(model):
        tensors.pop(name, None)
    load_tensors(model, tensors, "extract")
    return model.eval()


def save_supernet(supernet: Supernet, path: str | Path) -> None:
    """Write the supernet's tensors and its header (config, space, step) to one safetensors
    file, atomically (a crash leaves the previous file)."""
    header = {
        "format_version": FORMAT_VERSION,
        "config": supernet.config.to_dict(),
        "space": supernet.space,
        "step": supernet.step,
    }
    metadata = {HEADER_KEY: json.dumps(header, sort_keys=True)}
    write_safetensors(supernet, Path(path), metadata)


def read_header(metadata: dict[str, str], source: str) -> dict:
    header = json_header(metadata, HEADER_KEY, source, "tnas supernet")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: supernet format_version {header.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    step, space = header.get("step", 0), header.get("space", "")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{source}: supernet step must be an integer >= 0, got {step!r}")
    if not isinstance(space, str):
        raise CheckpointError(f"{source}: supernet space must be a string, got {space!r}")
    return header


def load_supernet(path: str | Path, config: ArchConfig | None = None) -> Supernet:
    """Rebuild a supernet saved by `save_supernet`; with `config`, also check it is that
    supernet's. Errors (missing or extra tensors, wrong shapes, bad header) are one line."""
    source = str(path)
    tensors, metadata = read_safetensors(path)
    header = read_header(metadata, source)
    try:
        saved = ArchConfig.from_dict(header.get("config"))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{source}: supernet header config: {err}") from None
    if config is not None and config != saved:
        raise CheckpointError(
            f"{source}: holds supernet {saved.short_hash}, not the expected {config.short_hash}"
        )
    check_size(saved, tensors, source)
    supernet = Supernet(saved, space=header.get("space", ""), step=header.get("step", 0))
    load_tensors(supernet, tensors, source)
    return supernet


__all__ = ["extract", "load_supernet", "save_supernet", "sliced_tensors"]


@dataclass(frozen=True)
class Extracted:
    """What `extract_to` wrote: the submodel placed in its supernet, its size, the supernet."""

    sub: Submodel
    params: int
    supernet: ArchConfig


def extract_to(
    supernet_path: str | Path,
    config: ArchConfig,
    kept: Sequence[int] | None,
    out: str | Path,
    **provenance: str,
) -> Extracted:
    """Load a supernet checkpoint, place `config` in it (`kept`: its supernet layers, default
    `default_kept`), cut the submodel out and write it to `out` as `model.safetensors` and
    `config.json` (`tnas.load_model(out)` rebuilds it). One-line `ValueError`s for a bad
    checkpoint or a config outside the supernet; `OSError` if `out` cannot be written."""
    supernet = load_supernet(supernet_path)
    sub = supernet.resolve(config, kept)
    model = extract(supernet, sub)
    provenance |= {"supernet": supernet.config.hash, "kept": ",".join(map(str, sub.kept))}
    save_model(model, out, **provenance)
    params = sum(p.numel() for p in model.parameters())
    return Extracted(sub, params, supernet.config)
