"""What the gates of a trained language model do over a prompt, per layer and time step.

The fused layers (nn.LSTM, nn.GRU) return only h and c: their gates live and die inside one kernel.
So the gates are computed again here, from the same weights and with the cells' own equations (those of
rnn.py and of torch.nn, whose gate rows are LSTM i, f, g, o and GRU r, z, n). `Recurrent`, the scratch
implementation, stores its weights under the same names in the same order, so one computation serves both
`--impl torch` and `--impl scratch`. The state starts from zeros and no dropout is applied, as in
generation; the h and c recomputed here match the model's own layers to float rounding (tests/models).

Every tensor returned is [T, H]: one row per prompt token t, one column per hidden unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from torchlab.models.rnn import LanguageModel

# The gates whose values are fractions in [0, 1] (sigmoids): what a heat map of "how open" shows. The LSTM's
# candidate g and the GRU's candidate n are tanh values in [-1, 1]; they are returned but are not gates.
SIGMOID_GATES = {"lstm": ("forget", "input", "output"), "gru": ("update", "reset"), "rnn": ()}


@dataclass
class LayerActivity:
    """One recurrent layer over the prompt; every tensor [T, H], fp32, on the CPU.

    gates: LSTM "input" i, "forget" f, "output" o (sigmoid) and "candidate" g (tanh);
           GRU "reset" r, "update" z (sigmoid) and "candidate" n (tanh); a plain RNN: none.
    hidden: h_t, the layer's output at each step (the next layer's input).
    cell: c_t, the LSTM's cell state; None for GRU and RNN.
    """

    gates: dict[str, Tensor]
    hidden: Tensor
    cell: Optional[Tensor] = None


@dataclass
class Gates:
    """The activity of every layer of a language model over one prompt, first layer first."""

    cell: str  # "lstm", "gru" or "rnn"
    tokens: list[str]  # the prompt's tokens, one per time step: the columns of a heat map
    layers: list[LayerActivity]

    @property
    def has_gates(self) -> bool:
        """False for a plain RNN, whose only activity is its hidden state."""
        return bool(SIGMOID_GATES[self.cell])

    @property
    def gate_names(self) -> tuple[str, ...]:
        """The sigmoid gates of this kind of cell, in the order a figure shows them."""
        return SIGMOID_GATES[self.cell]

    def most_active(self, layer: int, k: int) -> list[int]:
        """The k hidden units of `layer` (0-based) with the largest mean |h_t| over the prompt, most active
        first: the units that carry the most of what the layer passes on."""
        strength = self.layers[layer].hidden.abs().mean(dim=0)  # [H]
        return strength.topk(min(k, strength.numel())).indices.tolist()


# --- one layer over the prompt, from the equations ---------------------------------------------------------
# x [T, I] is the layer's input, weight_ih [G*H, I], weight_hh [G*H, H], biases [G*H]. The input's share of
# every gate does not depend on h, so it is computed for all steps in one matmul; only the h part loops.


def lstm_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> LayerActivity:
    """i, f, o = sigmoid(W_i* x_t + b_i* + W_h* h_{t-1} + b_h*), g the same with tanh;
    c_t = f * c_{t-1} + i * g; h_t = o * tanh(c_t)."""
    x_proj = F.linear(x, weight_ih, bias_ih + bias_hh)  # [T, 4H], rows i, f, g, o
    h = c = x.new_zeros(weight_hh.shape[1])  # [H]: zeros, as generation starts
    steps = []
    for x_t in x_proj:
        i, f, g, o = (x_t + weight_hh @ h).chunk(4)  # each [H]
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # keep a share f of the old memory, write a share i of the candidate
        h = o * torch.tanh(c)  # show a share o of it
        steps.append((i, f, g, o, c, h))
    i, f, g, o, c, h = (torch.stack(column) for column in zip(*steps))  # each [T, H]
    return LayerActivity({"input": i, "forget": f, "candidate": g, "output": o}, hidden=h, cell=c)


def gru_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> LayerActivity:
    """r, z = sigmoid(W_i* x_t + b_i* + W_h* h_{t-1} + b_h*); n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn));
    h_t = (1 - z) * n + z * h_{t-1}."""
    x_proj = F.linear(x, weight_ih, bias_ih)  # [T, 3H], rows r, z, n; b_hh stays apart: r scales its n rows
    h = x.new_zeros(weight_hh.shape[1])  # [H]
    steps = []
    for x_t in x_proj:
        x_r, x_z, x_n = x_t.chunk(3)  # each [H]
        h_r, h_z, h_n = (weight_hh @ h + bias_hh).chunk(3)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)  # the reset gate decides how much of the past enters the candidate
        h = (1 - z) * n + z * h  # the update gate keeps a share z of the old state
        steps.append((r, z, n, h))
    r, z, n, h = (torch.stack(column) for column in zip(*steps))  # each [T, H]
    return LayerActivity({"reset": r, "update": z, "candidate": n}, hidden=h)


def rnn_layer(x: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor) -> LayerActivity:
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh): no gates, only the hidden state."""
    x_proj = F.linear(x, weight_ih, bias_ih + bias_hh)  # [T, H]
    h = x.new_zeros(weight_hh.shape[1])
    hidden = []
    for x_t in x_proj:
        h = torch.tanh(x_t + weight_hh @ h)
        hidden.append(h)
    return LayerActivity({}, hidden=torch.stack(hidden))


LAYERS = {"lstm": lstm_layer, "gru": gru_layer, "rnn": rnn_layer}


def layer_weights(model: LanguageModel, k: int) -> list[Tensor]:
    """weight_ih, weight_hh, bias_ih, bias_hh of layer k in fp32: the names nn.LSTM/GRU/RNN and `Recurrent` share."""
    return [getattr(model.rnn, f"{name}_l{k}").float() for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


@torch.no_grad()
def compute_gates(model: LanguageModel, ids: Sequence[int], tokens: Optional[Sequence[str]] = None) -> Gates:
    """The gates, candidates and states of every layer of `model` over the token ids of a prompt.

    `tokens` name the time steps (the prompt's characters or words; default: the ids as text). The model's
    mode does not matter: no dropout is applied, as in generation. Tensors come back on the CPU.
    """
    if len(ids) == 0:
        raise ValueError("compute_gates needs at least one token id")
    if tokens is not None and len(tokens) != len(ids):
        raise ValueError(f"{len(tokens)} tokens for {len(ids)} ids")
    cfg = model.config
    device = model.embedding.weight.device
    x = model.embedding(torch.tensor(list(ids), device=device)).float()  # [T, E]
    layers = []
    for k in range(cfg.layers):
        activity = LAYERS[cfg.cell](x, *layer_weights(model, k))
        layers.append(activity)
        x = activity.hidden  # [T, H]: what the next layer reads
    names = list(tokens) if tokens is not None else [str(i) for i in ids]
    return Gates(cfg.cell, names, [on_cpu(layer) for layer in layers])


def on_cpu(layer: LayerActivity) -> LayerActivity:
    return LayerActivity({name: t.cpu() for name, t in layer.gates.items()}, layer.hidden.cpu(),
                         None if layer.cell is None else layer.cell.cpu())
