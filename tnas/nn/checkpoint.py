"""A standalone model on disk: `model.safetensors` and `config.json`, never a pickle.

`config.json` is the config's canonical JSON, so `tnas model summary DIR/config.json` reads it;
the safetensors header records the config's hash, which `load_model` checks against it.

>>> import tempfile, torch
>>> from tnas.space import ArchConfig
>>> model = build_model(ArchConfig(d_model=32, n_layers=1, vocab_size=64, max_seq_len=8))
>>> directory = tempfile.mkdtemp()
>>> save_model(model, directory)
>>> again = load_model(directory)
>>> tokens = torch.randint(0, 64, (1, 8))
>>> torch.equal(again(tokens), model(tokens))
True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from tnas.nn.model import TnasModel, build_model
from tnas.space.config import ArchConfig, ConfigError, count_params
from tnas.space.errors import OneLineError, one_line

MODEL_FILE = "model.safetensors"
# A header may ask for at most SIZE_SLACK times the numbers its file holds, plus this many.
SIZE_SLACK, SIZE_ALLOWANCE = 4, 2**20
CONFIG_FILE = "config.json"


class CheckpointError(OneLineError):
    """A checkpoint that is missing, corrupt or does not match its config; one line."""


def shared_names(module: nn.Module) -> set[str]:
    """State-dict names that alias an earlier entry (a tied LM head): stored once."""
    seen: set[int] = set()
    aliases = set()
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    return aliases


def json_header(metadata: Mapping[str, str], key: str, source: str, what: str) -> dict:
    """The JSON object stored under `key` in a safetensors file's metadata; `what` names the
    file in errors ("supernet" gives "not a supernet checkpoint", "supernet header ...")."""
    if key not in metadata:
        raise CheckpointError(f"{source}: not a {what} checkpoint (no {key} header)")
    try:
        header = json.loads(metadata[key])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{source}: {what} header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: {what} header must be a JSON object")
    return header


def partial_file(path: Path) -> Path:
    """A new, empty file beside `path`, created exclusively under a random name (so a link
    planted at a predictable name is never written through); renamed over `path` when done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".partial", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes it 0600; give it what open() would
    os.close(handle)
    return Path(name)


def replace_atomically(write, path: Path) -> None:
    """`write(partial)` into a fresh file beside `path`, then rename it over `path`: a crash
    leaves the previous file, and a symbolic link at `path` is replaced, not followed."""
    partial = partial_file(path)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_tensors(tensors: Mapping[str, Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    """Named tensors and a string header in one safetensors file, written atomically (a crash
    leaves the previous file)."""
    contiguous = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    header = {"format": "pt", **metadata}
    replace_atomically(lambda partial: save_file(contiguous, partial, metadata=header), Path(path))


def write_safetensors(module: nn.Module, path: Path, metadata: Mapping[str, str]) -> None:
    """The module's tensors (aliases once) and a string header, written atomically."""
    skip = shared_names(module)
    tensors = {name: t for name, t in module.state_dict().items() if name not in skip}
    write_tensors(tensors, path, metadata)


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and the string header of a safetensors file, or a one-line `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        problem = one_line(err)
        raise CheckpointError(f"{path}: not a readable safetensors file ({problem})") from None
    return tensors, metadata


def load_tensors(module: nn.Module, tensors: Mapping[str, Tensor], source: str) -> None:
    """Copy `tensors` into `module`, which must hold exactly those names and shapes."""
    skip = shared_names(module)
    expected = {n: t for n, t in module.state_dict().items() if n not in skip}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise CheckpointError(f"{source}: missing tensor(s): {', '.join(missing)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor(s): {', '.join(extra)}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[name].shape)}"
            )
        if tensor.is_floating_point() != expected[name].is_floating_point():
            raise CheckpointError(
                f"{source}: tensor {name} has dtype {tensor.dtype}, expected {expected[name].dtype}"
            )
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])


def check_size(config: ArchConfig, tensors: Mapping[str, Tensor], source: str) -> None:
    """Refuse, before a network is built, a config far larger than the numbers the file holds,
    so a header cannot make tnas allocate a model its file does not hold. A smaller shortfall
    is left to `load_tensors`, which names the missing or misshapen tensor."""
    needed = count_params(config)
    held = sum(tensor.numel() for tensor in tensors.values())
    if needed > SIZE_SLACK * held + SIZE_ALLOWANCE:
        raise CheckpointError(
            f"{source}: config {config.short_hash} has {needed:,} parameters but the file "
            f"holds {held:,} numbers"
        )


def parse_config(text: str, source: str) -> ArchConfig:
    try:
        return ArchConfig.from_json(text)
    except ConfigError as err:
        raise CheckpointError(f"{source}: {err}") from None


def save_model(model: TnasModel, directory: str | Path, **provenance: str) -> None:
    """Write `model.safetensors` and `config.json` into `directory` (created if needed).

    `provenance` (strings, such as the supernet it was cut from) goes into the safetensors
    header under `tnas.*` keys.
    """
    directory = Path(directory)
    config = model.config
    metadata = {"tnas.kind": "model", "tnas.config_hash": config.hash}
    metadata |= {f"tnas.{key}": str(value) for key, value in provenance.items()}
    write_safetensors(model, directory / MODEL_FILE, metadata)
    text = config.to_json() + "\n"
    replace_atomically(lambda partial: partial.write_text(text), directory / CONFIG_FILE)


def load_model(directory: str | Path) -> TnasModel:
    """Rebuild a model saved by `save_model` (or `tnas extract`): `build_model(config)` and its
    weights; eval mode. Errors (missing file, bad JSON, mismatched tensors) are one line."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: no such file")
    config = parse_config(config_path.read_text(), str(config_path))
    tensors, metadata = read_safetensors(directory / MODEL_FILE)
    source = str(directory / MODEL_FILE)
    if metadata.get("tnas.kind") != "model":
        raise CheckpointError(f"{source}: not a tnas model (header has no tnas.kind=model)")
    if metadata.get("tnas.config_hash") != config.hash:
        raise CheckpointError(
            f"{source}: weights were saved for config {metadata.get('tnas.config_hash', '?')[:12]}"
            f", but config.json is {config.short_hash}"
        )
    check_size(config, tensors, source)
    model = build_model(config)
    load_tensors(model, tensors, source)
    return model.eval()
