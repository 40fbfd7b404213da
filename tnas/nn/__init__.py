"""How a point becomes a network: mixers, activations, the FFN, norms and the model."""

from tnas.nn.checkpoint import CheckpointError, load_model, save_model
from tnas.nn.model import TnasModel, build_model
from tnas.nn.quant import UnsupportedQuantization, model_bytes, quantize
from tnas.nn.summary import ModelSummary, count_flops, summary

__all__ = [
    "CheckpointError",
    "ModelSummary",
    "TnasModel",
    "UnsupportedQuantization",
    "build_model",
    "count_flops",
    "load_model",
    "model_bytes",
    "quantize",
    "save_model",
    "summary",
]
