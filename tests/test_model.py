"""CharRNN's shapes, state carrying, weight tying, and the one-step sampler."""

from __future__ import annotations

import pytest
import torch

from charrnn.config import ModelConfig, build
from charrnn.errors import ConfigError
from charrnn.model import CharRNN
from charrnn.sample import Stepper, zero_states

from helpers import CELLS

V, B, T = 11, 3, 7


def make(name: str, num_layers: int = 2, **extra) -> CharRNN:
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=5, hidden_size=6, num_layers=num_layers,
                         **CELLS[name], **extra)
    return CharRNN(V, config).eval()


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_forward_shapes(name, num_layers):
    model = make(name, num_layers)
    idx = torch.randint(0, V, (B, T))
    logits, hidden = model(idx)
    assert logits.shape == (B, T, V)
    h_out = 3 if name == "lstm-proj" else 6
    if name.startswith("lstm"):
        h, c = hidden
        assert h.shape == (num_layers, B, h_out) and c.shape == (num_layers, B, 6)
    else:
        assert hidden.shape == (num_layers, B, 6)


@pytest.mark.parametrize("name", CELLS)
def test_carrying_state_across_two_halves_equals_one_pass(name):
    model = make(name)
    idx = torch.randint(0, V, (B, 2 * T))
    whole, _ = model(idx)
    first, hidden = model(idx[:, :T])
    second, _ = model(idx[:, T:], hidden)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)


@pytest.mark.parametrize("name", CELLS)
def test_stepper_reproduces_the_module_one_character_at_a_time(name):
    model = make(name)
    idx = torch.randint(0, V, (B, T))
    expected, _ = model(idx)
    stepper = Stepper(model)
    states = zero_states(model, B, torch.device("cpu"))
    with torch.no_grad():
        for t in range(T):
            logits, states = stepper.step(idx[:, t], states)
            torch.testing.assert_close(logits, expected[:, t], atol=1e-5, rtol=1e-5)


def test_tied_weights_share_one_matrix():
    torch.manual_seed(0)
    model = CharRNN(V, ModelConfig(embedding_dim=6, hidden_size=6, tie_weights=True))
    assert model.head.weight is model.embedding.weight
    untied = CharRNN(V, ModelConfig(embedding_dim=6, hidden_size=6))
    assert model.num_parameters() == untied.num_parameters() - V * 6


@pytest.mark.parametrize("values, message", [
    (dict(embedding_dim=5, hidden_size=6, tie_weights=True), "set --embedding-dim 6"),
    (dict(cell="lstm", embedding_dim=6, hidden_size=8, proj_size=6, tie_weights=True,
          bidirectional=True), r"set --embedding-dim 12"),
    (dict(cell="gru", proj_size=3), "lstm cell only"),
    (dict(cell="lstm", hidden_size=8, proj_size=8), "must be smaller than hidden_size"),
])
def test_model_settings_that_cannot_work_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        build("model", values)


def test_dropout_before_the_head_zeroes_a_fraction_p_and_rescales_the_rest():
    model = make("lstm", num_layers=1, dropout=0.4).train()
    seen = {}
    model.rnn.register_forward_hook(lambda m, args, out: seen.update(rnn=out[0]))
    model.head.register_forward_pre_hook(lambda m, args: seen.update(head=args[0]))
    model(torch.randint(0, V, (64, 50)))
    rnn_out, head_in = seen["rnn"], seen["head"]              # (B, T, H) each
    kept = head_in != 0
    assert abs(1 - kept.float().mean().item() - 0.4) < 0.03
    assert torch.allclose(head_in[kept], rnn_out[kept] / 0.6)
    model.eval()
    model(torch.randint(0, V, (4, 9)))
    assert torch.equal(seen["head"], seen["rnn"])               # no dropout in eval mode


@pytest.mark.parametrize("name", CELLS)
def test_dropout_between_layers_reaches_the_last_layers_state(name):
    """The last layer's final state depends on the mask between the layers (the
    head's dropout cannot touch it): in train mode it changes from draw to draw."""
    model = make(name, num_layers=2, dropout=0.5).train()
    idx = torch.randint(0, V, (B, T))

    def last_state():
        hidden = model(idx)[1]
        return (hidden[0] if isinstance(hidden, tuple) else hidden)[-1]

    torch.manual_seed(1)
    a = last_state()
    torch.manual_seed(2)
    assert not torch.allclose(a, last_state())
    model.eval()
    assert torch.equal(last_state(), last_state())
