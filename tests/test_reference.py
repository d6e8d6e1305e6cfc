"""charrnn.reference recomputes nn.RNN / nn.LSTM / nn.GRU exactly (float32, 1e-5)."""

import pytest
import torch
from torch import nn

from charrnn import reference

INPUT, HIDDEN, PROJ, BATCH, SEQ = 5, 7, 3, 3, 4
TOL = 1e-5

# CPU LSTMs with proj_size fall back from oneDNN and say so; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

CELLS = {
    "rnn-tanh": lambda **kw: nn.RNN(nonlinearity="tanh", **kw),
    "rnn-relu": lambda **kw: nn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: nn.LSTM(**kw),
    "lstm-proj": lambda **kw: nn.LSTM(proj_size=PROJ, **kw),
    "gru": lambda **kw: nn.GRU(**kw),
}
GRID = pytest.mark.parametrize("layout", ["batch-first", "seq-first"])


def build(cell: str, num_layers: int, bidirectional: bool, batch_first: bool,
          seed: int = 0, **extra) -> nn.RNNBase:
    torch.manual_seed(seed)
    rnn = CELLS[cell](input_size=INPUT, hidden_size=HIDDEN, num_layers=num_layers,
                      bidirectional=bidirectional, batch_first=batch_first, **extra)
    return rnn.eval()


def random_inputs(rnn: nn.RNNBase, with_state: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (BATCH, SEQ, INPUT) if rnn.batch_first else (SEQ, BATCH, INPUT)
    x = torch.randn(shape, generator=g)
    if not with_state:
        return x, None
    rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
    h_out = rnn.proj_size or rnn.hidden_size
    h0 = torch.randn(rows, BATCH, h_out, generator=g)
    if isinstance(rnn, nn.LSTM):
        return x, (h0, torch.randn(rows, BATCH, rnn.hidden_size, generator=g))
    return x, h0


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def assert_same(rnn: nn.RNNBase, x: torch.Tensor, hx) -> None:
    with torch.no_grad():
        expected_out, expected_state = rnn(x, hx)
        out, state = reference.forward(rnn, x, hx)
    assert max_diff(out, expected_out) <= TOL
    if isinstance(rnn, nn.LSTM):
        assert isinstance(state, tuple) and len(state) == 2
        assert max_diff(state[0], expected_state[0]) <= TOL   # h_n
        assert max_diff(state[1], expected_state[1]) <= TOL   # c_n
    else:
        assert isinstance(state, torch.Tensor)
        assert max_diff(state, expected_state) <= TOL


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "given-state"])
@GRID
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_torch(cell, num_layers, bidirectional, layout, with_state):
    rnn = build(cell, num_layers, bidirectional, batch_first=layout == "batch-first")
    x, hx = random_inputs(rnn, with_state)
    assert_same(rnn, x, hx)


@pytest.mark.parametrize("cell", list(CELLS))
def test_without_bias(cell):
    rnn = build(cell, 2, True, batch_first=True, bias=False)
    x, hx = random_inputs(rnn, with_state=True)
    assert_same(rnn, x, hx)


@pytest.mark.parametrize("cell", ["rnn-tanh", "lstm-proj", "gru"])
def test_unbatched_input(cell):
    rnn = build(cell, 2, True, batch_first=False)
    x, hx = random_inputs(rnn, with_state=True)
    x = x[:, 0]                                             # (L, N, H_in) -> (L, H_in)
    hx = tuple(t[:, 0] for t in hx) if isinstance(hx, tuple) else hx[:, 0]
    assert_same(rnn, x, hx)


def test_detects_a_wrong_gate_order():
    """The comparison has teeth: swapping LSTM gates i and f breaks it."""
    rnn = build("lstm", 1, False, batch_first=True)
    x, hx = random_inputs(rnn, with_state=True)
    with torch.no_grad():
        expected, _ = rnn(x, hx)
        w = rnn.weight_ih_l0
        i, f, g, o = w.chunk(4)
        w.copy_(torch.cat([f, i, g, o]))
        out, _ = reference.forward(rnn, x, hx)
    assert max_diff(out, expected) > 1e-3


def test_cells_follow_the_documented_equations():
    """Single steps written with explicit gate slices, as in the docstrings."""
    g = torch.Generator().manual_seed(3)
    x, h, c = (torch.randn(2, 4, generator=g), torch.randn(2, 6, generator=g),
               torch.randn(2, 6, generator=g))
    w_ih, w_hh = torch.randn(18, 4, generator=g), torch.randn(18, 6, generator=g)
    b_ih, b_hh = torch.randn(18, generator=g), torch.randn(18, generator=g)

    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    r = torch.sigmoid(gi[:, 0:6] + gh[:, 0:6])
    z = torch.sigmoid(gi[:, 6:12] + gh[:, 6:12])
    n = torch.tanh(gi[:, 12:18] + r * gh[:, 12:18])
    assert torch.allclose(reference.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh),
                          (1 - z) * n + z * h)

    relu = reference.rnn_cell(x, h, w_ih[:6], w_hh[:6], b_ih[:6], b_hh[:6], "relu")
    assert torch.allclose(relu, torch.relu(gi[:, :6] + gh[:, :6]))
    assert (relu >= 0).all()
    with pytest.raises(ValueError):
        reference.rnn_cell(x, h, w_ih[:6], w_hh[:6], nonlinearity="sigmoid")

    w4_ih, w4_hh = torch.randn(24, 4, generator=g), torch.randn(24, 6, generator=g)
    gates = x @ w4_ih.T + h @ w4_hh.T
    i, f, gg, o = (gates[:, k * 6:(k + 1) * 6] for k in range(4))
    c_t = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
    h_t, c_out = reference.lstm_cell(x, h, c, w4_ih, w4_hh)
    assert torch.allclose(c_out, c_t)
    assert torch.allclose(h_t, torch.sigmoid(o) * torch.tanh(c_t))
