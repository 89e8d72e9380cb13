"""Oracle tests: the gates recomputed from a language model's weights against the model's own layers, in fp32.

The fused layers give only h and c, at every step for the last layer and at the last step for all of them; run
on every prefix of the prompt, their last-step states cover every layer at every step. The h and c that the
returned gates imply must match those to 1e-5, which they can only do when each gate is the right one.
"""

from __future__ import annotations

import pytest
import torch

from torchlab.models.gates import SIGMOID_GATES, compute_gates
from torchlab.models.rnn import LanguageModel, LMConfig

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-5
V, E, H = 11, 5, 8  # vocabulary, embedding and hidden sizes
IDS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]


def tiny_model(cell: str, impl: str, layers: int, seed: int = 0, **config) -> LanguageModel:
    """A language model with weights four times torch's initial ones, so that gates reach towards 0 and 1
    and every wrong gate shows."""
    torch.manual_seed(seed)
    model = LanguageModel(LMConfig(vocab_size=V, cell=cell, impl=impl, embed_size=E, hidden_size=H, layers=layers,
                                   **{"dropout": 0.0, **config}))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4)
    return model.eval()


def layer_states(model: LanguageModel, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's own h (and c) of every layer after every step: [L, T, H] each, c None without a cell state."""
    hs, cs = [], []
    with torch.no_grad():
        for t in range(1, len(ids) + 1):
            _, state = model.rnn(model.embedding(torch.tensor([ids[:t]])))  # each [L, 1, H]
            h, c = state if isinstance(state, tuple) else (state, None)
            hs.append(h[:, 0])
            cs.append(None if c is None else c[:, 0])
    return torch.stack(hs, dim=1), None if cs[0] is None else torch.stack(cs, dim=1)


def shifted(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} for every t of x [T, H], with zeros before the first step: the state the step started from."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]])


def lstm_from_gates(gates: dict[str, torch.Tensor], swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """c_t = f * c_{t-1} + i * g and h_t = o * tanh(c_t), from the returned gates ([T, H] each)."""
    f, i = (gates["input"], gates["forget"]) if swap else (gates["forget"], gates["input"])
    c, cs = torch.zeros(H), []
    for t in range(f.shape[0]):
        c = f[t] * c + i[t] * gates["candidate"][t]
        cs.append(c)
    c = torch.stack(cs)
    return gates["output"] * torch.tanh(c), c


def gru_from_gates(model: LanguageModel, k: int, x: torch.Tensor, h: torch.Tensor,
                   gates: dict[str, torch.Tensor], swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, h) from the returned r and z, the layer's input x [T, I] and the returned h [T, H]:
    n = tanh(W_in x + b_in + r * (W_hn h_{t-1} + b_hn)) and h_t = (1 - z) * n + z * h_{t-1}."""
    r, z = (gates["update"], gates["reset"]) if swap else (gates["reset"], gates["update"])
    w_in = getattr(model.rnn, f"weight_ih_l{k}")[2 * H:]  # the n rows, after r and z
    b_in = getattr(model.rnn, f"bias_ih_l{k}")[2 * H:]
    w_hn = getattr(model.rnn, f"weight_hh_l{k}")[2 * H:]
    b_hn = getattr(model.rnn, f"bias_hh_l{k}")[2 * H:]
    h_before = shifted(h)
    with torch.no_grad():
        n = torch.tanh(x @ w_in.T + b_in + r * (h_before @ w_hn.T + b_hn))
    return n, (1 - z) * n + z * h_before


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_lstm_gates_give_back_the_fused_layers_h_and_c(impl, layers):
    model = tiny_model("lstm", impl, layers)
    result = compute_gates(model, IDS)
    h_ref, c_ref = layer_states(model, IDS)
    for k, layer in enumerate(result.layers):
        h, c = lstm_from_gates(layer.gates)
        assert max_diff(h, h_ref[k]) <= ATOL and max_diff(c, c_ref[k]) <= ATOL
        assert max_diff(layer.hidden, h_ref[k]) <= ATOL and max_diff(layer.cell, c_ref[k]) <= ATOL
        # The same check with forget and input swapped fails by far: the match cannot hide a wrong gate order.
        h_swapped, c_swapped = lstm_from_gates(layer.gates, swap=True)
        assert max_diff(c_swapped, c_ref[k]) > 1e-2


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_gru_gates_give_back_the_fused_layers_h(impl, layers):
    model = tiny_model("gru", impl, layers)
    result = compute_gates(model, IDS)
    h_ref, _ = layer_states(model, IDS)
    with torch.no_grad():
        x = model.embedding(torch.tensor(IDS))  # [T, E]: the first layer's input
    for k, layer in enumerate(result.layers):
        n, h = gru_from_gates(model, k, x, h_ref[k], layer.gates)
        assert max_diff(n, layer.gates["candidate"]) <= ATOL  # r enters only through n
        assert max_diff(h, h_ref[k]) <= ATOL and max_diff(layer.hidden, h_ref[k]) <= ATOL
        assert layer.cell is None
        _, h_swapped = gru_from_gates(model, k, x, h_ref[k], layer.gates, swap=True)
        assert max_diff(h_swapped, h_ref[k]) > 1e-2  # reset and update swapped: far off
        x = h_ref[k]  # the next layer reads this one's output


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gates_are_fractions_and_candidates_lie_in_minus_one_to_one(cell):
    result = compute_gates(tiny_model(cell, "torch", 2), IDS)
    assert result.has_gates and result.gate_names == SIGMOID_GATES[cell]
    for layer in result.layers:
        for name in result.gate_names:
            gate = layer.gates[name]
            assert gate.shape == (len(IDS), H) and gate.dtype == torch.float32 and gate.device.type == "cpu"
            assert gate.min() >= 0 and gate.max() <= 1
        assert layer.gates["candidate"].abs().max() <= 1
    every = torch.cat([layer.gates[name].flatten() for layer in result.layers for name in result.gate_names])
    assert every.min() < 0.1 and every.max() > 0.9  # the scaled weights really use the range


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_a_plain_rnn_has_only_its_hidden_state(impl):
    model = tiny_model("rnn", impl, 2)
    result = compute_gates(model, IDS)
    h_ref, _ = layer_states(model, IDS)
    assert not result.has_gates and result.gate_names == ()
    for k, layer in enumerate(result.layers):
        assert layer.gates == {} and layer.cell is None
        assert max_diff(layer.hidden, h_ref[k]) <= ATOL


def test_torch_and_scratch_models_with_the_same_weights_give_the_same_gates():
    fused, scratch = tiny_model("gru", "torch", 2), tiny_model("gru", "scratch", 2, seed=1)
    scratch.load_state_dict(fused.state_dict())
    a, b = compute_gates(fused, IDS), compute_gates(scratch, IDS)
    for x, y in zip(a.layers, b.layers):
        assert all(torch.equal(x.gates[name], y.gates[name]) for name in x.gates)


def test_training_mode_changes_nothing_generation_would_not_see():
    model = tiny_model("lstm", "torch", 2, dropout=0.5, embed_dropout=0.5)  # were they applied, all would change
    evaluated = compute_gates(model, IDS)
    trained = compute_gates(model.train(), IDS)
    assert all(torch.equal(a.hidden, b.hidden) for a, b in zip(evaluated.layers, trained.layers))


def test_most_active_units_rank_the_mean_absolute_hidden_state():
    result = compute_gates(tiny_model("lstm", "torch", 2), IDS, tokens=list("abcdefghij"))
    assert result.tokens == list("abcdefghij")
    for k, layer in enumerate(result.layers):
        strength = layer.hidden.abs().mean(dim=0)
        top = result.most_active(k, 3)
        assert len(top) == 3 and strength[top].tolist() == sorted(strength.tolist(), reverse=True)[:3]
        assert sorted(result.most_active(k, 100)) == list(range(H))  # k above H: every unit once


def test_bad_inputs_are_refused():
    model = tiny_model("lstm", "torch", 1)
    with pytest.raises(ValueError, match="at least one token"):
        compute_gates(model, [])
    with pytest.raises(ValueError, match="2 tokens for 3 ids"):
        compute_gates(model, [1, 2, 3], tokens=["a", "b"])
