from __future__ import annotations

import itertools

import pytest
import torch

from tnas.nn import build_model, summary
from tnas.space import ArchConfig, LayerConfig, count_params
from tnas.space.catalog import ACTIVATIONS, MIXERS


def tiny(mixer="attention", activation="gelu", **overrides) -> ArchConfig:
    layer = LayerConfig(mixer=mixer, n_heads=2, ffn_dim=24, activation=activation, state_size=4)
    fields = dict(d_model=16, n_layers=2, vocab_size=40, max_seq_len=20, layers=(layer, layer))
    return ArchConfig(**(fields | overrides))


@pytest.mark.parametrize(
    "mixer, activation, norm, head, tie",
    [
        (m, a, n, h, t)
        for (m, a), n, h, t in zip(
            itertools.product(sorted(MIXERS), sorted(ACTIVATIONS)),
            itertools.cycle(["layernorm", "rmsnorm", "rmsnorm"]),
            itertools.cycle(["lm", "lm", "classifier"]),
            itertools.cycle([True, False]),
            strict=False,
        )
    ],
    ids=lambda v: str(v),
)
def test_param_count_formula_matches_the_built_model(mixer, activation, norm, head, tie):
    config = tiny(
        mixer,
        activation,
        norm=norm,
        head=head,
        tie_embeddings=tie,
        n_classes=10 if head == "classifier" else 0,
    )
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == count_params(config)


@pytest.mark.parametrize("mixer", ["attention", "mdha"])
def test_param_count_formula_with_a_fixed_head_dim(mixer):
    layers = tuple(LayerConfig(mixer=mixer, n_heads=n, head_dim=12, ffn_dim=64) for n in (1, 3, 5))
    config = ArchConfig(d_model=32, n_layers=3, vocab_size=64, max_seq_len=16, layers=layers)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == count_params(config)
    assert model(torch.zeros(2, 16, dtype=torch.long)).shape == (2, 16, 64)


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_lm_forward_backward(mixer):
    torch.manual_seed(0)
    config = tiny(mixer)
    model = build_model(config)
    tokens = torch.randint(0, 40, (3, 20))
    logits = model(tokens)
    assert logits.shape == (3, 20, 40)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_lm_is_causal_end_to_end():
    torch.manual_seed(0)
    model = build_model(tiny("mdha")).eval()
    tokens = torch.randint(0, 40, (1, 20))
    changed = tokens.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 40
    torch.testing.assert_close(model(tokens)[:, :12], model(changed)[:, :12])


def test_classifier_head_sees_every_token():
    torch.manual_seed(0)
    model = build_model(tiny("gla", head="classifier", n_classes=10)).eval()
    tokens = torch.randint(0, 40, (2, 20))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 40
    assert model(tokens).shape == (2, 10)
    assert not torch.allclose(model(tokens), model(changed))


def test_tied_embeddings_share_one_tensor():
    model = build_model(tiny())
    assert model.lm_head.weight is model.tok_emb.weight


def test_too_long_a_sequence_is_refused():
    with pytest.raises(ValueError, match="exceeds max_seq_len 20"):
        build_model(tiny())(torch.zeros(1, 21, dtype=torch.long))


def test_summary_counts_params_and_flops_per_layer():
    config = tiny(
        layers=(LayerConfig(n_heads=2, ffn_dim=24), LayerConfig(mixer="pool", ffn_dim=48))
    )
    s = summary(config, batch=2)
    assert s.params == count_params(config)
    assert [layer.mixer for layer in s.layers] == ["attention", "pool"]
    # the pool layer's only matmuls are its FFN: 2 matrices, 2*D*F multiply-adds per token
    assert s.layers[1].flops == 2 * (2 * 16 * 48) * 2 * 20
    assert s.layers[0].flops > 0
    assert s.flops > sum(layer.flops for layer in s.layers)  # plus the LM head
