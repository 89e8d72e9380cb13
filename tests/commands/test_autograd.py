"""`torchlab autograd`: the gradient is right, and each demonstration really happens."""

import json

import torch

from torchlab.cli import main
from torchlab.commands import autograd


def run_json(capsys) -> dict:
    assert main(["autograd", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_gradient_is_4_5_and_matches_torch_autograd_grad(capsys):
    g = autograd.build()
    (expected,) = torch.autograd.grad(g["out"], g["x"])
    assert torch.equal(expected, torch.full((2, 2), 4.5))
    assert torch.allclose(autograd.hand_gradient(g["x"]), expected)
    facts = run_json(capsys)
    assert facts["agree"] is True
    assert facts["x_grad"] == facts["hand_grad"] == facts["autograd_grad"] == expected.tolist()
    assert facts["out"] == 27.0 and facts["y"] == [[3.0, 3.0], [3.0, 3.0]]
    assert facts["grad_fn"] == {"x": None, "y": "AddBackward0", "z": "MulBackward0", "out": "MeanBackward0"}


def test_demonstrations_actually_happen(capsys):
    facts = run_json(capsys)
    assert facts["accumulated_grad"] == [[9.0, 9.0], [9.0, 9.0]]  # a second backward adds 4.5 again
    assert "modified by an inplace operation" in facts["detach_inplace_error"]
    assert facts["data_inplace_grad"] == [[6.0, 6.0], [6.0, 6.0]]  # silently wrong...
    assert facts["right_grad"] == [[4.5, 4.5], [4.5, 4.5]]  # ...against the right value
    assert all(v == {"requires_grad": False, "grad_fn": None} for v in facts["untracked"].values())
    assert len(facts["untracked"]) == 3 and facts["shares_memory"] is True
    assert "leaf Variable" in facts["tracked_update_error"]
    assert facts["sgd_matches"] is True
    assert torch.allclose(torch.tensor(facts["no_grad_update"]), torch.full((2, 2), 1 - 0.1 * 4.5))


def test_text_walks_the_graph_and_exits_0(capsys):
    assert main(["autograd"]) == 0
    out = capsys.readouterr().out
    for fragment in ["AddBackward0", "MulBackward0", "MeanBackward0", "AccumulateGrad", "All three agree",
                     "[[9.0, 9.0], [9.0, 9.0]]", "modified by an inplace operation", "torch.no_grad()"]:
        assert fragment in out


def test_disagreement_exits_1(monkeypatch, capsys):
    monkeypatch.setattr(autograd, "hand_gradient", lambda x: torch.full_like(x, 4.0))
    assert main(["autograd"]) == 1
    assert "disagrees" in capsys.readouterr().err
