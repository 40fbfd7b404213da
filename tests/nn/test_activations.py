from __future__ import annotations

import pytest
import torch

from tnas.nn.activations import ACTIVATION_CLASSES, create_activation
from tnas.nn.ffn import FFN
from tnas.space.catalog import ACTIVATIONS, GLU_ACTIVATIONS, ffn_params
from tnas.space.config import ConfigError

names = pytest.mark.parametrize("name", sorted(ACTIVATION_CLASSES))


def test_registry_matches_catalog():
    assert set(ACTIVATION_CLASSES) == set(ACTIVATIONS)
    assert {n for n in ACTIVATION_CLASSES if create_activation(n).glu} == GLU_ACTIVATIONS


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown activation 'swish'; valid: .*squared_relu"):
        create_activation("swish")


@pytest.mark.parametrize(
    "name, x, expected",
    [
        ("relu", [-2.0, 3.0], [0.0, 3.0]),
        ("squared_relu", [-2.0, 3.0], [0.0, 9.0]),
        ("silu", [0.0], [0.0]),
        ("gelu", [0.0], [0.0]),
        ("polyrelu", [-1.0, 2.0], [0.0, (2 + 4 + 8) / 3]),
    ],
)
def test_pointwise_values(name, x, expected):
    out = create_activation(name)(torch.tensor(x))
    torch.testing.assert_close(out, torch.tensor(expected))


def test_glu_gates_the_up_projection():
    swiglu = create_activation("swiglu")
    gate, up = torch.tensor([0.0, 2.0]), torch.tensor([5.0, 3.0])
    torch.testing.assert_close(swiglu(gate, up), torch.nn.functional.silu(gate) * up)


def test_polynorm_is_scale_invariant_in_each_power():
    act = create_activation("polynorm")
    x = torch.randn(4, 32)
    torch.testing.assert_close(act(x), act(2.0 * x), rtol=1e-4, atol=1e-4)


@names
def test_ffn_builds_runs_and_trains(name):
    torch.manual_seed(0)
    ffn = FFN(16, 48, name)
    assert sum(p.numel() for p in ffn.parameters()) == ffn_params(16, 48, name)
    x = torch.randn(2, 5, 16)
    out = ffn(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, param in ffn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname


@names
def test_ffn_prefix_width_equals_a_smaller_ffn(name):
    torch.manual_seed(0)
    big, small = FFN(16, 48, name), FFN(16, 12, name)
    with torch.no_grad():
        small.up.weight.copy_(big.up.weight[:12])
        small.down.weight.copy_(big.down.weight[:, :12])
        if big.gate is not None:
            small.gate.weight.copy_(big.gate.weight[:12])
        small.act.load_state_dict(big.act.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(big(x, width=12), small(x), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(big(x, width=12), big(x))


def test_ffn_rejects_a_width_outside_it():
    with pytest.raises(ValueError, match="width must be in 1..48"):
        FFN(16, 48, "gelu")(torch.randn(1, 1, 16), width=49)
