"""How a point becomes a network: `build_model(config)`.

>>> import torch
>>> from tnas.space import ArchConfig, LayerConfig
>>> cfg = ArchConfig(d_model=32, n_layers=2, vocab_size=50, max_seq_len=16,
...                  layers=(LayerConfig(mixer="mdha", n_heads=4, ffn_dim=64),
...                          LayerConfig(mixer="ssm", ffn_dim=64, activation="swiglu")))
>>> build_model(cfg)(torch.randint(0, 50, (2, 16))).shape
torch.Size([2, 16, 50])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tnas.nn.ffn import FFN
from tnas.nn.mixers import create_mixer
from tnas.space.config import ArchConfig, ConfigError, LayerConfig
from tnas.space.errors import unknown_name

NORM_CLASSES = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def create_norm(name: str, d_model: int) -> nn.Module:
    if name not in NORM_CLASSES:
        raise ConfigError(unknown_name("norm", name, NORM_CLASSES))
    return NORM_CLASSES[name](d_model, eps=1e-5)


class Block(nn.Module):
    """Pre-norm residual block: `x + mixer(norm(x))`, then `x + ffn(norm(x))`."""

    def __init__(self, config: ArchConfig, layer: LayerConfig):
        super().__init__()
        self.norm1 = create_norm(config.norm, config.d_model)
        self.mixer = create_mixer(config.d_model, layer, config.max_seq_len)
        self.norm2 = create_norm(config.norm, config.d_model)
        self.ffn = FFN(config.d_model, layer.ffn_dim, layer.activation)

    def forward(
        self,
        x: Tensor,
        causal: bool = True,
        ffn_width: int | None = None,
        n_heads: int | None = None,
    ) -> Tensor:
        """`ffn_width` and `n_heads` run a prefix of the FFN's hidden units and of the
        attention heads (MatFormer nesting, `tnas.elastic`); None runs them all."""
        if n_heads is None:
            x = x + self.mixer(self.norm1(x), causal)
        else:
            x = x + self.mixer(self.norm1(x), causal, n_heads=n_heads)
        return x + self.ffn(self.norm2(x), ffn_width)


class TnasModel(nn.Module):
    """Token and learned position embeddings, blocks, a final norm, then a head.

    `head="lm"`: causal mixers, logits (B, T, vocab_size). `head="classifier"`: bidirectional
    mixers, mean-pooled tokens, logits (B, n_classes).
    """

    def __init__(self, config: ArchConfig):
        super().__init__()
        self.config = config
        self.causal = config.head == "lm"
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in config.layers)
        self.norm = create_norm(config.norm, config.d_model)
        if self.causal:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
            if config.tie_embeddings:
                self.lm_head.weight = self.tok_emb.weight
        else:
            self.classifier = nn.Linear(config.d_model, config.n_classes)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token plus position embeddings. tokens: (B, T) -> (B, T, D)."""
        T = tokens.shape[1]
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.config.max_seq_len}")
        positions = torch.arange(T, device=tokens.device)
        return self.tok_emb(tokens) + self.pos_emb(positions)  # (B, T, D)

    def logits(self, x: Tensor) -> Tensor:
        """The final norm and the head. x: (B, T, D) -> (B, T, V) or (B, C)."""
        x = self.norm(x)
        if self.causal:
            return self.lm_head(x)  # (B, T, V)
        return self.classifier(x.mean(dim=1))  # (B, C)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, self.causal)
        return self.logits(x)


def build_model(config: ArchConfig) -> TnasModel:
    """Build the network a config describes, with freshly initialised weights."""
    return TnasModel(config)
