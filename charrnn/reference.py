"""The equations of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``, written out by hand.

``forward(rnn, input, hx)`` recomputes what ``rnn(input, hx)`` returns, from the module's
own parameters and settings, one layer, one direction and one time step at a time, with
nothing but matrix products and elementwise functions. It is here to be read and to check
PyTorch (``charrnn inspect --verify`` and ``tests/test_reference.py``); it is far too slow
to train with, and it always computes in eval mode (no dropout between layers).

Notation, as in PyTorch's documentation: ``x_t`` is the input at time step t, ``h_t`` the
hidden state, ``c_t`` the LSTM's cell state, ``sigma`` the logistic sigmoid and ``*`` the
elementwise product. A weight matrix is stored as (outputs, inputs), so ``W x`` for a
batch of row vectors ``x`` (N, inputs) is written ``x @ W.T`` (N, outputs).

Gate packing. PyTorch keeps all gates of one layer and direction in a single matrix, one
block of ``hidden_size`` rows per gate, in this order:

    LSTM   weight_ih = [W_ii; W_if; W_ig; W_io]   (4*hidden_size, input_size)   i, f, g, o
    GRU    weight_ih = [W_ir; W_iz; W_in]         (3*hidden_size, input_size)   r, z, n
    RNN    weight_ih = W_ih                       (hidden_size, input_size)

``weight_hh``, ``bias_ih`` and ``bias_hh`` are packed the same way (``weight_hh`` has
``hidden_size`` columns, or ``proj_size`` for a projected LSTM). ``torch.chunk`` along
the rows cuts a packed pre-activation back into its gates.

Parameter names: ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
and, for an LSTM with ``proj_size > 0``, ``weight_hr_l{k}`` (the projection), each with a
``_reverse`` suffix for the backward direction of a bidirectional module. Layer ``k > 0``
reads the previous layer's output, both directions concatenated (``D * H_out`` wide).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# The state a cell carries: h for RNN and GRU, (h, c) for LSTM.
State = Tensor | tuple[Tensor, Tensor]


def _affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``W x + b`` for a batch of row vectors: (N, in) -> (N, out)."""
    y = x @ weight.T                        # (N, in) @ (in, out) -> (N, out)
    return y if bias is None else y + bias


# ----------------------------------------------------------------------------- cells

def rnn_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
             b_ih: Tensor | None = None, b_hh: Tensor | None = None,
             nonlinearity: str = "tanh") -> Tensor:
    """One step of the plain (Elman) RNN:

        h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

    with ``relu`` in place of ``tanh`` when ``nonlinearity="relu"``. The two biases are
    simply added, so only their sum matters.

    x (N, H_in), h (N, H) -> h_t (N, H).
    """
    pre = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)   # (N, H)
    if nonlinearity == "tanh":
        return torch.tanh(pre)
    if nonlinearity == "relu":
        return torch.relu(pre)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}; expected tanh or relu")


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Tensor | None = None, b_hh: Tensor | None = None,
              w_hr: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One step of the LSTM, gates packed in rows i, f, g, o:

        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate
        f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate
        g_t = tanh (W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)     cell candidate
        o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    With a projection (``proj_size = P > 0``) the last line becomes
    ``h_t = W_hr (o_t * tanh(c_t))``: h shrinks from hidden_size to P features, and
    ``W_hh`` is (4*hidden_size, P) because it reads the projected h. c keeps
    hidden_size features.

    x (N, H_in), h (N, H_out), c (N, H) -> h_t (N, H_out), c_t (N, H).
    """
    gates = _affine(x, w_ih, b_ih) + _affine(h, w_hh, b_hh)  # (N, 4H)
    i, f, g, o = gates.chunk(4, dim=1)                       # (N, 4H) -> 4 x (N, H)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_t = f * c + i * g
    h_t = o * torch.tanh(c_t)                                # (N, H)
    if w_hr is not None:
        h_t = h_t @ w_hr.T                                   # (N, H) -> (N, P)
    return h_t, c_t


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
             b_ih: Tensor | None = None, b_hh: Tensor | None = None) -> Tensor:
    """One step of the GRU, gates packed in rows r, z, n:

        r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
        z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
        n_t = tanh (W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))  new gate (candidate)
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    The reset gate multiplies ``W_hn h + b_hn`` *with* its bias, so for n the two biases
    are not interchangeable (for r and z only their sum matters). Here ``W_hr`` is the
    reset gate's block of ``weight_hh``, not the LSTM's projection ``weight_hr``.

    x (N, H_in), h (N, H) -> h_t (N, H).
    """
    gi = _affine(x, w_ih, b_ih)                  # (N, 3H): W_i* x + b_i*
    gh = _affine(h, w_hh, b_hh)                  # (N, 3H): W_h* h + b_h*
    i_r, i_z, i_n = gi.chunk(3, dim=1)           # (N, 3H) -> 3 x (N, H)
    h_r, h_z, h_n = gh.chunk(3, dim=1)           # (N, 3H) -> 3 x (N, H)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


# ----------------------------------------------------------------------------- stack

def _layer_params(rnn: nn.RNNBase, layer: int, direction: int) -> dict[str, Tensor | None]:
    """The weights of one layer and direction, by PyTorch's names."""
    suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    params: dict[str, Tensor | None] = {
        "w_ih": getattr(rnn, "weight_ih" + suffix),
        "w_hh": getattr(rnn, "weight_hh" + suffix),
        "b_ih": getattr(rnn, "bias_ih" + suffix) if rnn.bias else None,
        "b_hh": getattr(rnn, "bias_hh" + suffix) if rnn.bias else None,
    }
    if rnn.mode == "LSTM" and rnn.proj_size > 0:
        params["w_hr"] = getattr(rnn, "weight_hr" + suffix)
    return params


def _step(mode: str, x: Tensor, state: State, params: dict) -> State:
    """Advance one cell of kind ``mode`` (``rnn.mode``) by one time step."""
    if mode == "LSTM":
        h, c = state
        return lstm_cell(x, h, c, **params)
    if mode == "GRU":
        return gru_cell(x, state, **params)
    nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[mode]
    return rnn_cell(x, state, nonlinearity=nonlinearity, **params)


def _run_direction(mode: str, x: Tensor, state: State, params: dict,
                   reverse: bool) -> tuple[Tensor, State]:
    """One layer, one direction over the whole sequence.

    x (L, N, H_in) -> outputs (L, N, H_out) and the state after the last step taken.
    The reverse direction starts at t = L-1 and ends at t = 0, but its outputs are
    stored at the time step they belong to.
    """
    seq_len = x.shape[0]
    steps = range(seq_len - 1, -1, -1) if reverse else range(seq_len)
    outputs: list[Tensor | None] = [None] * seq_len
    for t in steps:
        state = _step(mode, x[t], state, params)          # (N, H_in) -> (N, H_out)
        outputs[t] = state[0] if mode == "LSTM" else state
    return torch.stack(outputs), state                    # L x (N, H_out) -> (L, N, H_out)


def forward(rnn: nn.RNNBase, input: Tensor, hx: State | None = None
            ) -> tuple[Tensor, State]:
    """What ``rnn(input, hx)`` returns, recomputed from the equations.

    ``input`` is (N, L, H_in) if ``rnn.batch_first`` else (L, N, H_in), or unbatched
    (L, H_in). ``hx`` is h0 (D*num_layers, N, H_out) for RNN/GRU and (h0, c0) for LSTM,
    c0 being (D*num_layers, N, hidden_size); zeros when omitted. D = 2 for a
    bidirectional module, else 1; H_out = proj_size or hidden_size.

    Returns ``(output, h_n)`` for RNN/GRU and ``(output, (h_n, c_n))`` for LSTM, with
    output (N, L, D*H_out) or (L, N, D*H_out) like the input, and h_n / c_n shaped like
    h0 / c0. Row ``layer * D + direction`` of h0 and h_n belongs to that layer and
    direction.
    """
    mode = rnn.mode                               # "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
    is_lstm = mode == "LSTM"
    num_directions = 2 if rnn.bidirectional else 1
    h_out = rnn.proj_size if is_lstm and rnn.proj_size > 0 else rnn.hidden_size

    # Bring the input to (L, N, H_in), the layout the loop below walks over.
    unbatched = input.dim() == 2
    if unbatched:
        x = input.unsqueeze(1)                    # (L, H_in) -> (L, 1, H_in)
    elif rnn.batch_first:
        x = input.transpose(0, 1)                 # (N, L, H_in) -> (L, N, H_in)
    else:
        x = input
    batch = x.shape[1]

    # Initial states, one row per layer and direction.
    rows = rnn.num_layers * num_directions
    if hx is None:
        h0 = x.new_zeros(rows, batch, h_out)
        c0 = x.new_zeros(rows, batch, rnn.hidden_size) if is_lstm else None
    else:
        h0, c0 = hx if is_lstm else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)                  # (rows, H_out) -> (rows, 1, H_out)
            c0 = c0.unsqueeze(1) if is_lstm else None

    h_n: list[Tensor] = []
    c_n: list[Tensor] = []
    for layer in range(rnn.num_layers):
        outputs = []
        for direction in range(num_directions):
            row = layer * num_directions + direction
            state = (h0[row], c0[row]) if is_lstm else h0[row]
            params = _layer_params(rnn, layer, direction)
            out, state = _run_direction(mode, x, state, params, reverse=direction == 1)
            outputs.append(out)
            if is_lstm:
                h_n.append(state[0])
                c_n.append(state[1])
            else:
                h_n.append(state)
        # The next layer reads both directions side by side.
        x = torch.cat(outputs, dim=2)             # D x (L, N, H_out) -> (L, N, D*H_out)

    output = x
    h_last = torch.stack(h_n)                     # rows x (N, H_out) -> (rows, N, H_out)
    c_last = torch.stack(c_n) if is_lstm else None  # rows x (N, H) -> (rows, N, H)
    if unbatched:
        output = output.squeeze(1)                # (L, 1, D*H_out) -> (L, D*H_out)
        h_last = h_last.squeeze(1)                # (rows, 1, H_out) -> (rows, H_out)
        c_last = c_last.squeeze(1) if is_lstm else None
    elif rnn.batch_first:
        output = output.transpose(0, 1)           # (L, N, D*H_out) -> (N, L, D*H_out)
    return (output, (h_last, c_last)) if is_lstm else (output, h_last)
