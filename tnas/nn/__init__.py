"""How a point becomes a network: mixers, activations, the FFN, norms and the model."""

from tnas.nn.model import TnasModel, build_model
from tnas.nn.summary import ModelSummary, summary

__all__ = ["ModelSummary", "TnasModel", "build_model", "summary"]
