"""models/registry.py: every model, image classifier or language model, rebuilt from its checkpoint."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.test_scoring import CPU, make_checkpoint
from torchlab.cli import main
from torchlab.errors import UserError
from torchlab.models.cnn import NotesCNN
from torchlab.models.registry import (CLASSIFIER, DEFAULT_VOCAB, LANGUAGE_MODEL, LANGUAGE_MODELS, MODELS, build_model,
                                      count_macs, count_params, from_checkpoint, model_config, require_kind)
from torchlab.models.rnn import LanguageModel, LMConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return make_checkpoint()


def test_from_checkpoint_loads_weights_in_eval_mode(ckpt):
    model = from_checkpoint(ckpt, CPU)
    assert isinstance(model, NotesCNN) and not model.training
    for key, value in ckpt["model_state"].items():
        assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize("damage", ["wrong-shape", "missing-key", "extra-key"])
def test_from_checkpoint_rejects_mismatched_weights(damage):
    ckpt = make_checkpoint()
    state = dict(ckpt["model_state"])
    if damage == "wrong-shape":
        state["fc1.weight"] = torch.zeros(7, 10816)
    elif damage == "missing-key":
        del state["conv2.bias"]
    else:
        state["conv3.weight"] = torch.zeros(1)
    ckpt["model_state"] = state
    with pytest.raises(UserError) as info:
        from_checkpoint(ckpt, CPU)
    assert "x.pt" in info.value.message and "notes-cnn" in info.value.message


def test_from_checkpoint_unknown_model_is_user_error():
    ckpt = make_checkpoint()
    ckpt["model_name"] = "resnet-9000"
    with pytest.raises(UserError) as info:
        from_checkpoint(ckpt, CPU)
    assert "resnet-9000" in info.value.message


def lm_checkpoint(cell: str, impl: str = "torch", seed: int = 0) -> tuple[dict, LanguageModel]:
    """A checkpoint as `torchlab train lm` writes it (the parts from_checkpoint reads), and its model."""
    torch.manual_seed(seed)
    model = LanguageModel(LMConfig(vocab_size=30, cell=cell, impl=impl, embed_size=8, hidden_size=16, layers=2))
    return {"task": "lm", "model_name": f"lm-{cell}", "model_config": dataclasses.asdict(model.config),
            "model_state": model.state_dict(), "path": "lm.pt"}, model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_language_models_are_rebuilt_from_their_checkpoint(cell, impl):
    ckpt, model = lm_checkpoint(cell, impl)
    rebuilt = from_checkpoint(ckpt, CPU)
    assert isinstance(rebuilt, LanguageModel) and not rebuilt.training and rebuilt.config == model.config
    tokens = torch.randint(30, (2, 5))
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens)[0], model.eval()(tokens)[0])


@pytest.mark.parametrize("key", ["hidden_size", "vocab_size"])
def test_a_language_model_whose_weights_do_not_fit_is_a_user_error(key):
    ckpt, _ = lm_checkpoint("gru")
    ckpt["model_config"] = dict(ckpt["model_config"], **{key: 64})
    with pytest.raises(UserError) as info:
        from_checkpoint(ckpt, CPU)
    assert "lm.pt: not a usable language-model checkpoint" in info.value.message and "'lm-gru'" in info.value.message


def test_language_models_are_in_the_registry_but_not_image_model_names():
    assert set(LANGUAGE_MODELS) == {"lm-rnn", "lm-lstm", "lm-gru"} and not set(LANGUAGE_MODELS) & set(MODELS)
    model = build_model("lm-gru", {})
    assert isinstance(model, LanguageModel) and model.config == LMConfig(vocab_size=DEFAULT_VOCAB, cell="gru")
    with pytest.raises(UserError) as info:
        model_config("lm-lstm")  # what `torchlab train fashion-mnist --model lm-lstm` asks
    assert "language model" in info.value.message and "torchlab train lm --cell lstm" in info.value.hint


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_count_macs_of_a_language_model_is_per_token(cell):
    """Every recurrent weight once per token (the gates' G*H rows over input and hidden), then the decoder."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    ckpt, model = lm_checkpoint(cell)
    hand = gates * 16 * (8 + 16) + gates * 16 * (16 + 16) + 16 * 30
    assert count_macs(model, (1,), torch.long) == hand
    assert count_macs(model, (7,), torch.long) == 7 * hand  # T tokens cost T times one
    scratch = LanguageModel(LMConfig(**dict(ckpt["model_config"], impl="scratch")))
    assert count_macs(scratch, (1,), torch.long) == hand  # torchlab's own layers count as torch's


def test_kind_of_a_checkpoint_is_checked_with_one_line_naming_both():
    lm_ckpt, _ = lm_checkpoint("lstm")
    require_kind(lm_ckpt, LANGUAGE_MODEL, "generate")
    with pytest.raises(UserError) as info:
        require_kind(lm_ckpt, CLASSIFIER, "predict")
    assert "a language model (lm-lstm), and `torchlab predict` needs an image classifier" in str(info.value)
    image = dict(make_checkpoint(), task="fashion-mnist")
    require_kind(image, CLASSIFIER, "predict")
    with pytest.raises(UserError) as info:
        require_kind(image, LANGUAGE_MODEL, "generate")
    message = str(info.value)
    assert "not 'lm': an image classifier (notes-cnn), and `torchlab generate` needs a language model" in message
    assert "\n" not in message


def test_models_command_lists_the_language_models_per_token(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "MACs/image" in out and "MACs/token" in out and f"{DEFAULT_VOCAB}-token vocabulary" in out
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    lstm = build_model("lm-lstm", {})
    assert rows["lm-lstm"]["params"] == count_params(lstm) and rows["lm-lstm"]["macs_per"] == "token"
    assert rows["lm-lstm"]["macs"] == count_macs(lstm, (1,), torch.long)
    assert "macs_per" not in rows["notes-cnn"]  # the image rows are as before
