"""tnas: neural architecture search and design spaces for transformer-family models."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `load_model` and `save_model` import torch, so only when first used: `import tnas.space`
    # (and `tnas space ...`) must stay torch-free.
    if name in ("load_model", "save_model"):
        from tnas.nn import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'tnas' has no attribute {name!r}")


__all__ = ["load_model", "save_model"]
