"""Recurrent networks written from their gate equations, and a character/word language model.

The cells (`RNNCell`, `LSTMCell`, `GRUCell`) compute one time step; `Recurrent`
runs a stack of them over a sequence. Parameter shapes, gate order (LSTM rows
i, f, g, o; GRU rows r, z, n), initialisation and parameter names are those of
torch.nn, so weights copy one-to-one and a `state_dict` of `nn.LSTM` loads into
`Recurrent("lstm", ...)` and back.

Every weight is split in two: `weight_ih` [G*H, I] acts on the input x_t and
`weight_hh` [G*H, H] on the previous hidden state h_{t-1}, where G is the number
of gates (1 for RNN, 4 for LSTM, 3 for GRU). The input part does not depend on
h, so `Recurrent` computes it for all time steps in one matmul and loops over
time only for the part that must wait for h_{t-1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

# The state a recurrent layer carries between time steps: h, or (h, c) for the LSTM.
State = Union[Tensor, tuple[Tensor, Tensor]]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


# --- one time step, from the equations --------------------------------------------------------
# Each step takes the input part of the gates, x_proj [B, G*H], already computed, so that the
# cells and the sequence loop share one implementation of the equations. For the RNN and the
# LSTM x_proj = W_ih x_t + b_ih + b_hh holds both biases; the GRU needs b_hn apart (see gru_step).


def rnn_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor) -> Tensor:
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), with x_proj = W_ih x_t + b_ih + b_hh [B, H]."""
    return torch.tanh(torch.addmm(x_proj, h, weight_hh.t()))


def lstm_step(x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step; x_proj = W_ih x_t + b_ih + b_hh [B, 4H] holds the rows of the gates i, f, g, o.

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)     input gate: how much of the candidate to write
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)     forget gate: how much of the old cell to keep
    g = tanh(W_ig x + b_ig + W_hg h + b_hg)        candidate cell
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)     output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
    """
    gates = torch.addmm(x_proj, h, weight_hh.t())  # [B, 4H]
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(x_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> Tensor:
    """One GRU step; x_proj = W_ih x_t + b_ih [B, 3H] holds the rows of r, z, n.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)         reset gate
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)         update gate
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))      candidate; r scales the hidden part only
    h_t = (1 - z) * n + z * h_{t-1}
    """
    # The hidden projection is kept apart from x_proj because r multiplies only its n rows.
    h_proj = torch.addmm(bias_hh, h, weight_hh.t())  # [B, 3H]
    x_r, x_z, x_n = x_proj.chunk(3, dim=1)
    h_r, h_z, h_n = h_proj.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    # Not torch.lerp(n, h, z): under bf16 autocast n is bf16 and h may be fp32, which lerp refuses
    # while * and + promote.
    return (1 - z) * n + z * h


# --- cells ------------------------------------------------------------------------------------


class _Cell(nn.Module):
    """weight_ih [G*H, I], weight_hh [G*H, H], bias_ih and bias_hh [G*H], all U(-1/sqrt(H), 1/sqrt(H))."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNNCell(_Cell):
    """Elman cell: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    forward(x [B, I], h [B, H] or None for zeros) -> h_t [B, H], like nn.RNNCell.
    """

    gates = 1

    def forward(self, x: Tensor, h: Optional[Tensor] = None) -> Tensor:
        h = self.zeros(x) if h is None else h
        return rnn_step(F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh), h, self.weight_hh)


class LSTMCell(_Cell):
    """Long short-term memory cell (rows of the weights: input, forget, candidate, output gates).

    i = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
    f = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
    g = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    o = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

    forward(x [B, I], (h, c) each [B, H] or None for zeros) -> (h_t, c_t), like nn.LSTMCell.
    """

    gates = 4

    def forward(self, x: Tensor, state: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        h, c = (self.zeros(x), self.zeros(x)) if state is None else state
        return lstm_step(F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh), h, c, self.weight_hh)


class GRUCell(_Cell):
    """Gated recurrent unit (rows of the weights: reset, update, candidate).

    r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

    forward(x [B, I], h [B, H] or None for zeros) -> h_t [B, H], like nn.GRUCell.
    """

    gates = 3

    def forward(self, x: Tensor, h: Optional[Tensor] = None) -> Tensor:
        h = self.zeros(x) if h is None else h
        return gru_step(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)


# --- a stack of layers over a sequence --------------------------------------------------------


class Recurrent(nn.Module):
    """A multi-layer, batch-first RNN, LSTM or GRU with torch.nn's parameter names and behaviour.

    forward(x [B, T, I], state=None) -> (out [B, T, H], state), where state is h [L, B, H]
    (rnn, gru) or (h, c) (lstm), zeros when None: the contract of nn.RNN/LSTM/GRU with
    batch_first=True. Layer k owns weight_ih_l{k} [G*H, I or H], weight_hh_l{k} [G*H, H],
    bias_ih_l{k} and bias_hh_l{k} [G*H]. Dropout is applied to the output of every layer but
    the last, in training mode only.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if mode not in GATES:
            raise ValueError(f"unknown recurrent mode {mode!r}: choose one of {', '.join(GATES)}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be between 0 and 1, got {dropout}")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.dropout = num_layers, dropout
        rows = GATES[mode] * hidden_size
        # Registered in nn.RNNBase's order, so that reset_parameters draws the same numbers as torch.
        for k in range(num_layers):
            fan_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, fan_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(rows, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(rows)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def layer_weights(self, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        h = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device, dtype=dtype)
        return (h, torch.zeros_like(h)) if self.mode == "lstm" else h

    def forward(self, x: Tensor, state: Optional[State] = None) -> tuple[Tensor, State]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected input [batch, time, {self.input_size}], got {list(x.shape)}")
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        h0, c0 = state if self.mode == "lstm" else (state, None)
        seq = x.transpose(0, 1)  # [T, B, I]: time-major inside, so that unbind(0) gives the steps
        h_last, c_last = [], []
        for k in range(self.num_layers):
            if k > 0:
                seq = F.dropout(seq, self.dropout, self.training)  # between layers, never after the last
            seq, h, c = self.run_layer(k, seq, h0[k], None if c0 is None else c0[k])
            h_last.append(h)
            c_last.append(c)
        out = seq.transpose(0, 1)  # [B, T, H]
        h_n = torch.stack(h_last)  # [L, B, H]
        return out, ((h_n, torch.stack(c_last)) if self.mode == "lstm" else h_n)

    def run_layer(self, k: int, seq: Tensor, h: Tensor, c: Optional[Tensor]) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """One layer over time: seq [T, B, I] -> ([T, B, H], h_T, c_T)."""
        w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
        if self.mode == "gru":
            proj = F.linear(seq, w_ih, b_ih)  # [T, B, 3H]; b_hh stays in the loop: r scales its n rows
        else:
            proj = F.linear(seq, w_ih, b_ih + b_hh)  # [T, B, G*H]: both biases added once, not per step
        outs = []
        for x_proj in proj.unbind(0):  # unbind, not proj[t]: its backward is one stack, not T copies
            if self.mode == "lstm":
                h, c = lstm_step(x_proj, h, c, w_hh)
            elif self.mode == "gru":
                h = gru_step(x_proj, h, w_hh, b_hh)
            else:
                h = rnn_step(x_proj, h, w_hh)
            outs.append(h)
        return torch.stack(outs), h, c

    def extra_repr(self) -> str:
        return (f"{self.mode}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"dropout={self.dropout}, batch_first=True")


# --- the language model -----------------------------------------------------------------------


@dataclass
class LMConfig:
    vocab_size: int
    cell: str = "lstm"  # rnn, lstm or gru
    impl: str = "torch"  # torch: nn.RNN/LSTM/GRU; scratch: Recurrent, the equations above
    embed_size: int = 256
    hidden_size: int = 512
    layers: int = 2
    dropout: float = 0.3  # between recurrent layers and before the decoder
    embed_dropout: float = 0.0  # on the embeddings
    tie: bool = False  # the decoder reuses the embedding matrix (needs embed_size == hidden_size)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, one mask per training window


TORCH_LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def recurrent_layer(cfg: LMConfig) -> nn.Module:
    """nn.RNN/LSTM/GRU or the equivalent `Recurrent`; both have the same parameter names."""
    # Dropout acts only between layers; torch warns when it is set for a single layer.
    dropout = cfg.dropout if cfg.layers > 1 else 0.0
    if cfg.impl == "torch":
        return TORCH_LAYERS[cfg.cell](cfg.embed_size, cfg.hidden_size, cfg.layers, batch_first=True, dropout=dropout)
    return Recurrent(cfg.cell, cfg.embed_size, cfg.hidden_size, cfg.layers, dropout)


class LanguageModel(nn.Module):
    """Next-token model: embedding -> recurrent layers -> dropout -> linear decoder.

    tokens [B, T] -> embedding [B, T, E] -> rnn [B, T, H] -> logits [B, T, V]. The state
    returned by forward is passed back in with the next chunk of the same sequences
    (after `detach_state`: truncated backpropagation through time).
    """

    def __init__(self, cfg: LMConfig):
        super().__init__()
        if cfg.cell not in GATES:
            raise ValueError(f"unknown cell {cfg.cell!r}: choose one of {', '.join(GATES)}")
        if cfg.impl not in ("torch", "scratch"):
            raise ValueError(f"unknown impl {cfg.impl!r}: choose torch or scratch")
        if cfg.tie and cfg.embed_size != cfg.hidden_size:
            raise ValueError(f"tie=True needs embed_size == hidden_size (the decoder reuses the [V, E] embedding "
                             f"as its [V, H] weight), got embed_size={cfg.embed_size}, hidden_size={cfg.hidden_size}")
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_size)
        self.embed_dropout = nn.Dropout(cfg.embed_dropout)
        self.rnn = recurrent_layer(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        # Small uniform embedding and decoder, zero decoder bias (as in PyTorch's word-language-model
        # example): nn.Embedding's N(0, 1) would start a tied decoder with huge logits.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if cfg.tie:
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    # Set where the device has no bf16 kernel for the recurrent layers (oneDNN's fused LSTM without AVX-512):
    # under bf16 autocast they then run in fp32, and only the embedding and the decoder in bf16.
    fp32_recurrence = False

    def forward(self, tokens: Tensor, state: Optional[State] = None) -> tuple[Tensor, State]:
        x = self.embed_dropout(self.embedding(tokens))  # [B, T] -> [B, T, E]
        out, state = self.recurrent(x, state)  # [B, T, H]
        return self.decoder(self.dropout(out)), state  # [B, T, V]

    def recurrent(self, x: Tensor, state: Optional[State]) -> tuple[Tensor, State]:
        """The recurrent layers, with weight drop while training (Merity et al., AWD-LSTM).

        Ordinary dropout on h would change the memory at every time step; dropping entries of
        each `weight_hh` [G*H, H] instead removes the same connections at all T steps of a
        window, which regularises the recurrence without disturbing it. The dropped matrices
        are passed to the unchanged layer through `functional_call`, so it works for the fused
        torch layers and for `Recurrent` alike."""
        if self.fp32_recurrence and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.recurrent(x.float(), state)
        p = self.config.weight_drop
        if not (self.training and p):
            return self.rnn(x, state)
        params = {name: F.dropout(w, p) if name.startswith("weight_hh") else w
                  for name, w in self.rnn.named_parameters()}
        return functional_call(self.rnn, params, (x, state))

    def init_state(self, batch_size: int, device=None) -> State:
        """Zeros: h [L, B, H], or (h, c) for the LSTM."""
        cfg = self.config
        h = torch.zeros(cfg.layers, batch_size, cfg.hidden_size, device=device)
        return (h, torch.zeros_like(h)) if cfg.cell == "lstm" else h

    @staticmethod
    def detach_state(state: State) -> State:
        """The same values without their history: gradients stop at the start of the next chunk."""
        if isinstance(state, tuple):
            return tuple(s.detach() for s in state)
        return state.detach()
