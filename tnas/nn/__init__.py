"""How a point becomes a network: mixers, activations, the FFN, norms and the model."""

from tnas.nn.model import TnasModel, build_model
from tnas.nn.quant import UnsupportedQuantization, model_bytes, quantize
from tnas.nn.summary import ModelSummary, count_flops, summary

__all__ = [
    "ModelSummary",
    "TnasModel",
    "UnsupportedQuantization",
    "build_model",
    "count_flops",
    "model_bytes",
    "quantize",
    "summary",
]
