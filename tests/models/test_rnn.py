"""Oracle tests: the recurrent cells, `Recurrent` and the language model against torch.nn, in fp32."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchlab.models.rnn import GRUCell, LanguageModel, LMConfig, LSTMCell, Recurrent, RNNCell

pytestmark = pytest.mark.usefixtures("one_thread")
ATOL = 1e-5
I, H, B = 4, 6, 3  # input size, hidden size, batch
CELLS = {"rnn": (RNNCell, nn.RNNCell), "lstm": (LSTMCell, nn.LSTMCell), "gru": (GRUCell, nn.GRUCell)}
LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Independent copies that require grad, one set per implementation."""
    return [t.detach().clone().requires_grad_() for t in tensors]


def random_state(mode: str, shape: tuple[int, ...], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(*shape, generator=gen) for _ in range(2 if mode == "lstm" else 1))


def weighted_loss(outputs: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
    # Random weights on every output, so that each one reaches the gradients with its own share.
    return sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)


def assert_same_grads(ours: nn.Module, ref: nn.Module, our_inputs, ref_inputs) -> None:
    for a, b in zip(our_inputs, ref_inputs):
        assert max_diff(a.grad, b.grad) <= ATOL
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        assert max_diff(p.grad, ref_params[name].grad) <= ATOL, name


# --- cells ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(CELLS))
def test_cell_parameters_have_torch_shapes_names_and_init(mode):
    ours_class, ref_class = CELLS[mode]
    torch.manual_seed(0)
    ours = ours_class(I, H)
    torch.manual_seed(0)
    ref = ref_class(I, H)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    bound = 1 / H**0.5
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name  # same draws in the same order: U(-1/sqrt(H), 1/sqrt(H))
        assert p.abs().max() <= bound


@pytest.mark.parametrize("given_state", [True, False], ids=["state", "zeros"])
@pytest.mark.parametrize("mode", sorted(CELLS))
def test_cell_matches_torch_outputs_and_gradients(mode, given_state):
    ours_class, ref_class = CELLS[mode]
    ours, ref = ours_class(I, H), ref_class(I, H)
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, I, generator=gen)
    state = random_state(mode, (B, H), gen) if given_state else ()
    our_in, ref_in = leaves(x, *state), leaves(x, *state)

    def call(cell, inputs):
        x, *s = inputs
        out = cell(x, (tuple(s) if mode == "lstm" else s[0]) if s else None)
        return list(as_tuple(out))

    our_out, ref_out = call(ours, our_in), call(ref, ref_in)
    for a, b in zip(our_out, ref_out):
        assert max_diff(a, b) <= ATOL
    weighted_loss(our_out, torch.Generator().manual_seed(2)).backward()
    weighted_loss(ref_out, torch.Generator().manual_seed(2)).backward()
    assert_same_grads(ours, ref, our_in, ref_in)


# --- Recurrent --------------------------------------------------------------------------------


def layer_pair(mode: str, layers: int, dropout: float = 0.0) -> tuple[Recurrent, nn.Module]:
    ref = LAYERS[mode](I, H, layers, batch_first=True, dropout=dropout)
    ours = Recurrent(mode, I, H, layers, dropout)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_recurrent_parameters_are_named_shaped_and_drawn_like_torch(mode):
    torch.manual_seed(0)
    ref = LAYERS[mode](I, H, 3, batch_first=True)
    torch.manual_seed(0)
    ours = Recurrent(mode, I, H, 3)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), ref.parameters()))


@pytest.mark.parametrize("given_state", [True, False], ids=["state", "zeros"])
@pytest.mark.parametrize("steps", [1, 5, 17])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_recurrent_matches_torch_outputs_states_and_gradients(mode, layers, steps, given_state):
    ours, ref = layer_pair(mode, layers)
    gen = torch.Generator().manual_seed(steps * 10 + layers)
    x = torch.randn(B, steps, I, generator=gen)
    state = random_state(mode, (layers, B, H), gen) if given_state else ()
    our_in, ref_in = leaves(x, *state), leaves(x, *state)

    def call(module, inputs):
        x, *s = inputs
        out, final = module(x, (tuple(s) if mode == "lstm" else s[0]) if s else None)
        return [out, *as_tuple(final)]

    our_out, ref_out = call(ours, our_in), call(ref, ref_in)
    assert our_out[0].shape == (B, steps, H)
    assert all(s.shape == (layers, B, H) for s in our_out[1:])
    for a, b in zip(our_out, ref_out):
        assert max_diff(a, b) <= ATOL
    weighted_loss(our_out, torch.Generator().manual_seed(3)).backward()
    weighted_loss(ref_out, torch.Generator().manual_seed(3)).backward()
    assert_same_grads(ours, ref, our_in, ref_in)


@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_recurrent_state_dict_loads_into_torch(mode):
    ours = Recurrent(mode, I, H, 2)
    ref = LAYERS[mode](I, H, 2, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, 7, I)
    with torch.no_grad():
        assert max_diff(ours(x)[0], ref(x)[0]) <= ATOL


@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_dropout_between_layers(mode):
    ours, ref = layer_pair(mode, 3, dropout=0.5)
    x = torch.randn(B, 9, I)
    with torch.no_grad():
        ours.eval(), ref.eval()
        evaluated = ours(x)[0]
        assert max_diff(evaluated, ref(x)[0]) <= ATOL  # eval: no dropout, as torch
        ours.train(), ref.train()
        torch.manual_seed(7)
        out, final = ours(x)
        torch.manual_seed(7)
        ref_out, _ = ref(x)
    assert max_diff(out, evaluated) > 1e-3  # train: the masks change what the upper layers see
    assert max_diff(out, ref_out) <= ATOL  # and they are torch's masks: same draws, same order
    # No dropout after the last layer: the output at the last step is the final state itself,
    # with no dropped (zero) or rescaled entries.
    h_last = as_tuple(final)[0][-1]
    assert torch.equal(out[:, -1], h_last)
    assert (out != 0).all()


@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_dropout_with_one_layer_changes_nothing(mode):
    ours = Recurrent(mode, I, H, 1, dropout=0.5)
    x = torch.randn(B, 6, I)
    with torch.no_grad():
        trained = ours.train()(x)[0]
        assert torch.equal(trained, ours.eval()(x)[0])


def test_recurrent_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown recurrent mode"):
        Recurrent("transformer", I, H)
    with pytest.raises(ValueError, match="num_layers"):
        Recurrent("gru", I, H, 0)
    with pytest.raises(ValueError, match=r"expected input \[batch, time, 4\]"):
        Recurrent("gru", I, H)(torch.zeros(B, I))


# --- the language model -----------------------------------------------------------------------

V = 11


def tiny_config(**overrides) -> LMConfig:
    return LMConfig(**{"vocab_size": V, "embed_size": 5, "hidden_size": 7, "layers": 2, "dropout": 0.2, **overrides})


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_lm_torch_and_scratch_give_the_same_logits_from_one_state_dict(cell):
    torch_lm = LanguageModel(tiny_config(cell=cell, impl="torch")).eval()
    scratch_lm = LanguageModel(tiny_config(cell=cell, impl="scratch")).eval()
    assert isinstance(torch_lm.rnn, LAYERS[cell]) and isinstance(scratch_lm.rnn, Recurrent)
    tokens = torch.randint(0, V, (B, 8), generator=torch.Generator().manual_seed(0))
    for source, target in ((torch_lm, scratch_lm), (scratch_lm, torch_lm)):
        target.load_state_dict(source.state_dict())
        with torch.no_grad():
            state = source.init_state(B, "cpu")
            logits, state = source(tokens, state)
            logits2, _ = source(tokens, state)  # a second chunk, from the carried state
            assert logits.shape == (B, 8, V)
            assert max_diff(logits, target(tokens)[0]) <= ATOL
            target_state = target(tokens)[1]
            assert max_diff(logits2, target(tokens, target_state)[0]) <= ATOL


@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_weight_drop_masks_hidden_weights_while_training_only(cell):
    """Both impls drop the same weight_hh entries for the same seed: the same logits and gradients as a
    layer whose weight_hh was masked by hand; in eval mode nothing is dropped."""
    cfg = dict(cell=cell, dropout=0.0, weight_drop=0.5)
    torch_lm, scratch_lm = LanguageModel(tiny_config(impl="torch", **cfg)), LanguageModel(tiny_config(impl="scratch", **cfg))
    scratch_lm.load_state_dict(torch_lm.state_dict())
    plain = LanguageModel(tiny_config(impl="torch", cell=cell, dropout=0.0))
    tokens = torch.randint(0, V, (B, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # the masks weight drop will draw: one per layer, in parameter order
        torch.manual_seed(7)
        masked = {k: F.dropout(w, 0.5) if ".weight_hh" in k else w for k, w in torch_lm.state_dict().items()}
    plain.load_state_dict(masked)
    expected = plain(tokens)[0]
    for lm in (torch_lm, scratch_lm):
        torch.manual_seed(7)
        logits = lm(tokens)[0]
        assert max_diff(logits, expected) <= ATOL
        logits.sum().backward()
        grad = lm.rnn.weight_hh_l0.grad
        assert grad.abs().sum() > 0 and torch.all(grad[masked["rnn.weight_hh_l0"] == 0] == 0)  # dropped: no gradient
    plain.load_state_dict(torch_lm.state_dict())  # unmasked weights
    with torch.no_grad():
        eval_logits = torch_lm.eval()(tokens)[0]
        assert max_diff(eval_logits, plain(tokens)[0]) <= ATOL
        assert max_diff(eval_logits, expected) > 1e-3


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_lm_state_carries_a_sequence_across_chunks(impl):
    lm = LanguageModel(tiny_config(impl=impl)).eval()
    tokens = torch.randint(0, V, (B, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole, _ = lm(tokens)
        first, state = lm(tokens[:, :5])
        second, _ = lm(tokens[:, 5:], LanguageModel.detach_state(state))
    assert max_diff(torch.cat([first, second], dim=1), whole) <= ATOL


def test_lm_stores_config_and_builds_the_layers():
    cfg = tiny_config(cell="gru", impl="scratch", embed_dropout=0.1)
    lm = LanguageModel(cfg)
    assert lm.config is cfg
    assert lm.embedding.weight.shape == (V, 5)
    assert (lm.rnn.mode, lm.rnn.num_layers, lm.rnn.dropout) == ("gru", 2, 0.2)
    assert lm.decoder.weight.shape == (V, 7)
    assert lm.embed_dropout.p == 0.1 and lm.dropout.p == 0.2
    assert LanguageModel(tiny_config(layers=1)).rnn.dropout == 0.0  # nothing between layers to drop


def test_tie_shares_the_embedding_storage():
    lm = LanguageModel(tiny_config(embed_size=7, tie=True))
    assert lm.decoder.weight is lm.embedding.weight
    assert lm.decoder.weight.data_ptr() == lm.embedding.weight.data_ptr()
    assert sum(p.numel() for p in lm.parameters()) == sum(p.numel() for p in LanguageModel(
        tiny_config(embed_size=7)).parameters()) - V * 7
    logits, _ = lm(torch.zeros(1, 3, dtype=torch.long))
    logits.sum().backward()
    assert lm.embedding.weight.grad is not None  # one gradient, from both uses
    other = LanguageModel(tiny_config(embed_size=7, tie=True, impl="scratch"))
    other.load_state_dict(lm.state_dict())
    assert other.decoder.weight is other.embedding.weight


def test_tie_needs_equal_sizes():
    with pytest.raises(ValueError, match="embed_size == hidden_size"):
        LanguageModel(tiny_config(embed_size=5, hidden_size=7, tie=True))


@pytest.mark.parametrize("field,value", [("cell", "transformer"), ("impl", "cuda")])
def test_lm_rejects_unknown_cell_and_impl(field, value):
    with pytest.raises(ValueError, match=repr(value)):
        LanguageModel(tiny_config(**{field: value}))


@pytest.mark.parametrize("impl", ["torch", "scratch"])
@pytest.mark.parametrize("cell", sorted(LAYERS))
def test_init_state_and_detach_state(cell, impl):
    lm = LanguageModel(tiny_config(cell=cell, impl=impl))
    state = lm.init_state(B, torch.device("cpu"))
    assert all(s.shape == (2, B, 7) and not s.any() for s in as_tuple(state))
    assert isinstance(state, tuple) == (cell == "lstm")
    _, state = lm(torch.zeros(B, 4, dtype=torch.long), state)
    assert all(s.grad_fn is not None for s in as_tuple(state))
    cut = LanguageModel.detach_state(state)
    assert type(cut) is type(state)
    assert all(c.grad_fn is None and not c.requires_grad for c in as_tuple(cut))
    assert all(torch.equal(c, s) for c, s in zip(as_tuple(cut), as_tuple(state)))


def test_tiny_lm_overfits_a_repeated_sequence():
    torch.manual_seed(0)
    lm = LanguageModel(LMConfig(vocab_size=V, cell="lstm", impl="scratch", embed_size=16, hidden_size=32,
                                layers=1, dropout=0.0))
    pattern = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3])  # after a 1: 4 or 5, so needs memory
    tokens = pattern.repeat(4).view(1, -1).expand(4, -1)  # [4, 64]
    opt = torch.optim.Adam(lm.parameters(), lr=0.02)
    tic = time.perf_counter()
    for step in range(300):
        logits, _ = lm(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1))
        if loss.item() < 0.1:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, (step, loss.item())
    assert time.perf_counter() - tic < 3.0


@pytest.mark.parametrize("mode", sorted(LAYERS))
def test_recurrent_trains_under_bf16_autocast(mode):
    # The matmuls run in bf16 while a carried state may be fp32: the equations must mix the two.
    ours = Recurrent(mode, I, H, 2)
    x = torch.randn(B, 5, I, requires_grad=True)
    state = tuple(s.requires_grad_() for s in as_tuple(ours.init_state(B)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = ours(x, state if mode == "lstm" else state[0])
    (out.float().sum() + sum(s.float().sum() for s in as_tuple(final))).backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in [x, *state, *ours.parameters()])


def test_fp32_recurrence_keeps_the_recurrent_layers_out_of_bf16():
    """Where the device has no bf16 kernel for a recurrent layer, the language model runs that layer in fp32
    under bf16 autocast (and only there); the embedding and the decoder stay in bf16."""
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(12, "lstm", "torch", 8, 8, 1, dropout=0.0))
    tokens = torch.randint(12, (2, 5))
    seen = {}
    model.rnn.register_forward_hook(lambda m, inputs, out: seen.update(input=inputs[0].dtype, out=out[0].dtype))
    model.fp32_recurrence = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, state = model(tokens)  # without the flag nn.LSTM would compute (or fail to) in bf16 here
    assert seen == {"input": torch.float32, "out": torch.float32}
    assert logits.dtype == torch.bfloat16 and state[0].dtype == torch.float32
    logits.float().sum().backward()
    assert model.rnn.weight_hh_l0.grad is not None
    plain, _ = model(tokens)  # no autocast: the flag changes nothing
    assert plain.dtype == torch.float32
