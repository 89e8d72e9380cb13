"""`torchlab autograd`: the notes' autograd example, one step at a time.

    x = torch.ones(2, 2, requires_grad=True); y = x + 2; z = y * y * 3; out = z.mean(); out.backward()

Each section below is a function returning (lines to print, facts for --json),
so the text and the JSON come from the same computation. The exit code is 1
if autograd's gradient ever disagrees with the one worked out by hand.
"""

from __future__ import annotations

import json
import re
import sys

import torch

from torchlab.i18n import _, pad

INDENT = "    "


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help=_("print the key numbers as JSON instead of the explanation"))


def build() -> dict:
    """A fresh copy of the notes' graph; every demo gets its own, since backward() frees the graph."""
    x = torch.ones(2, 2, requires_grad=True)  # [2, 2], a leaf: made by us, not by an operation
    y = x + 2  # [2, 2]
    z = y * y * 3  # [2, 2]; evaluated as (y * y) * 3
    out = z.mean()  # [] (a scalar): backward() needs a scalar to start from
    return {"x": x, "y": y, "z": z, "out": out}


def hand_gradient(x: torch.Tensor) -> torch.Tensor:
    """out = (1/n) sum 3 (x_ij + 2)^2, so d out / d x_ij = (1/n) * 6 * (x_ij + 2), with n = x.numel()."""
    return (1 / x.numel()) * 6 * (x.detach() + 2)


def name_of(fn) -> str:
    return "None" if fn is None else type(fn).__name__


def show(t: torch.Tensor) -> str:
    """Values to 6 significant digits: 0.55, not float32's 0.5499999523162842."""
    return re.sub(r"-?\d+\.\d+(e-?\d+)?", lambda m: repr(float(f"{float(m.group()):.6g}")), str(t.tolist()))


def describe(label: str, t: torch.Tensor) -> list[str]:
    return [f"{INDENT}{label}",
            INDENT * 2 + _("value") + f" {show(t)}   requires_grad {t.requires_grad}   is_leaf {t.is_leaf}   "
            f"grad_fn {name_of(t.grad_fn)}"]


def indented(text: str, indent: str = INDENT) -> list[str]:
    """A message of several lines (translated as one), each line indented."""
    return [indent + line for line in text.split("\n")]


def graph_lines(fn, labels: dict, prefix: str = "", seen: set | None = None) -> list[str]:
    """The grad_fn tree as backward() walks it: each node's next_functions are its children."""
    seen = set() if seen is None else seen
    lines = []
    for i, (child, _input) in enumerate(fn.next_functions):
        last = i == len(fn.next_functions) - 1
        branch, deeper = ("└─ ", "   ") if last else ("├─ ", "│  ")
        if child is None:
            note = _("a constant: no gradient is needed for it")
        elif id(child) in seen:
            note = _("the same node again: both gradient contributions are added")
        else:
            note = labels.get(id(child), "")
        lines.append(f"{INDENT}{prefix + branch + name_of(child):<30} {note}")
        if child is not None and id(child) not in seen:
            seen.add(id(child))
            lines += graph_lines(child, labels, prefix + deeper, seen)
    return lines


def forward_section() -> tuple[list[str], dict]:
    g = build()
    yy = g["z"].grad_fn.next_functions[0][0]  # the node of y * y, inside z = (y * y) * 3
    leaf = g["y"].grad_fn.next_functions[0][0]  # AccumulateGrad: writes into x.grad
    labels = {id(g["y"].grad_fn): "y = x + 2", id(g["z"].grad_fn): "z = (y * y) * 3",
              id(yy): _("y * y: y is used twice"), id(leaf): _("stores the gradient in x.grad (x is a leaf)")}
    lines = [_("1. The forward pass records a graph"), ""]
    for label, key in (("x = torch.ones(2, 2, requires_grad=True)", "x"), ("y = x + 2", "y"),
                       ("z = y * y * 3", "z"), ("out = z.mean()", "out")):
        lines += describe(label, g[key])
    lines += [""] + indented(_("x is a leaf: we made it ourselves, so no operation produced it and its grad_fn is None.\n"
                               "Every tensor computed from it inherits requires_grad=True and keeps, in grad_fn, the\n"
                               "operation that produced it. The nodes link to their inputs' nodes through "
                               "next_functions;\nbackward() follows those links from out back to x:")) + ["",
              f"{INDENT}{name_of(g['out'].grad_fn):<30} out = z.mean()"]
    lines += graph_lines(g["out"].grad_fn, labels)
    facts = {k: (t.item() if t.dim() == 0 else t.tolist()) for k, t in g.items()}
    facts["grad_fn"] = {k: None if t.grad_fn is None else name_of(t.grad_fn) for k, t in g.items()}
    return lines, facts


def backward_section() -> tuple[list[str], dict]:
    g = build()
    check = build()  # a second copy for torch.autograd.grad, which returns the gradient without touching .grad
    g["out"].backward()
    x, hand = g["x"], hand_gradient(g["x"])
    (functional,) = torch.autograd.grad(check["out"], check["x"])
    agree = torch.allclose(x.grad, hand) and torch.allclose(functional, hand)
    n = x.numel()
    lines = [_("2. backward() fills x.grad"), "", f"{INDENT}out.backward()",
             f"{INDENT}x.grad                            {show(x.grad)}",
             f"{INDENT}torch.autograd.grad(out, x)       {show(functional)}",
             f"{INDENT}{pad(_('worked out by hand'), 33)} {show(hand)}", ""]
    lines += indented(_("By hand: out = (1/{n}) * sum of 3 (x_ij + 2)^2, so d out / d x_ij = (1/{n}) * 6 * (x_ij + 2);\n"
                        "at x_ij = 1 that is 1.5 * 3 = {value}. ").format(n=n, value=f"{hand[0, 0].item():g}")
                      + (_("All three agree.") if agree else _("THEY DISAGREE."))
                      + "\n" + _("Only leaves keep a .grad; y and z's gradients are used on the way and then dropped\n"
                                 "(call y.retain_grad() before backward() to keep one)."))
    return lines, {"x_grad": x.grad.tolist(), "autograd_grad": functional.tolist(), "hand_grad": hand.tolist(),
                   "agree": agree}


def accumulate_section() -> tuple[list[str], dict]:
    g = build()
    g["out"].backward()
    first = g["x"].grad.clone()
    again = build_from(g["x"])  # the same forward pass on the same leaf x
    again.backward()
    lines = [_("3. Gradients accumulate"), ""]
    lines += indented(_("After one backward() x.grad is {grad}. Run the forward pass again on\n"
                        "the same x and call backward() a second time, without clearing x.grad:").format(
                          grad=show(first)))
    lines += [f"{INDENT}x.grad                            {show(g['x'].grad)}", ""]
    lines += indented(_("backward() adds into .grad instead of overwriting it (handy when one batch is processed\n"
                        "in pieces). So a training loop must clear the gradients before each step's backward():\n"
                        "optimizer.zero_grad(), or x.grad = None by hand. Otherwise every step follows the sum\n"
                        "of all past gradients."))
    return lines, {"first_grad": first.tolist(), "accumulated_grad": g["x"].grad.tolist()}


def build_from(x: torch.Tensor) -> torch.Tensor:
    y = x + 2
    return (y * y * 3).mean()


def views_section() -> tuple[list[str], dict]:
    y = build()["y"]
    with torch.no_grad():
        under = y * 2
    results = {"y.detach() * 2": y.detach() * 2, "y.data * 2": y.data * 2,
               "with torch.no_grad(): y * 2": under}
    lines = [_("4. Stepping outside autograd: .detach(), .data and torch.no_grad()"), "",
             f"{INDENT}" + _("(a) All three give results that autograd does not track:")]
    for label, t in results.items():
        lines.append(f"{INDENT * 2}{label:<30} requires_grad {t.requires_grad}   grad_fn {name_of(t.grad_fn)}")
    same = y.detach().data_ptr() == y.data.data_ptr() == y.data_ptr()
    shared = _("Yes.") if same else _("No!")
    lines += indented(_("Do y.detach() and y.data share y's memory, rather than copy it? {answer}\n"
                        "They differ in what happens when that memory is changed:").format(answer=shared),
                      INDENT + "    ")
    facts = {label: {"requires_grad": t.requires_grad, "grad_fn": None if t.grad_fn is None else name_of(t.grad_fn)}
             for label, t in results.items()}
    return lines, {"untracked": facts, "shares_memory": same}


def inplace_section() -> tuple[list[str], dict]:
    """z = y * y * 3 saved y for its backward; change y in place afterwards and call backward()."""
    g = build()
    g["y"].detach().add_(1)  # shares y's version counter: autograd will notice
    try:
        g["out"].backward()
        error = None
    except RuntimeError as e:
        error = str(e).split(" Hint:")[0]
    h = build()
    h["y"].data.add_(1)  # .data hides the change from autograd: y is now 4, but out was computed with y = 3
    h["out"].backward()
    right = hand_gradient(h["x"])
    lines = [f"{INDENT}" + _("(b) z = y * y * 3 kept y to compute its gradient later. Now add 1 to y in place:"),
             f"{INDENT * 2}" + _("y.detach().add_(1), then out.backward() raises"),
             f"{INDENT * 3}RuntimeError: {error}" if error else f"{INDENT * 3}" + _("(no error was raised)")]
    lines += indented(_(".detach() shares y's version counter, so autograd sees that a saved tensor changed\n"
                        "and refuses to compute with it.\n"
                        "y.data.add_(1), then out.backward() runs without a word and gives"), INDENT * 2)
    lines += [f"{INDENT * 3}" + _("x.grad {grad}   but the right value is {right}").format(
        grad=show(h["x"].grad), right=show(right))]
    lines += indented(_("The gradient was computed with the new y ({new}) for an out that came from the old y "
                        "({old}).\nNothing warns you. Use .detach(): when it goes wrong, it goes wrong loudly.").format(
                          new=f"{h['y'][0, 0].item():g}", old=f"{h['x'][0, 0].item() + 2:g}"), INDENT * 2)
    return lines, {"detach_inplace_error": error, "data_inplace_grad": h["x"].grad.tolist(),
                   "right_grad": right.tolist()}


def update_section(lr: float = 0.1) -> tuple[list[str], dict]:
    """An optimiser's update changes the leaf in place: only allowed, and only correct, under no_grad."""
    g = build()
    g["out"].backward()
    x = g["x"]
    try:
        x -= lr * x.grad
        error = None
    except RuntimeError as e:
        error = str(e)
    with torch.no_grad():
        x -= lr * x.grad  # not recorded in any graph: x stays a leaf
    twin = build()
    twin["out"].backward()
    torch.optim.SGD([twin["x"]], lr=lr).step()  # SGD.step runs under no_grad too
    same = torch.allclose(x, twin["x"])  # equal up to rounding: SGD computes x + (-lr) * grad
    lines = [f"{INDENT}" + _("(c) An optimiser changes the leaf x in place. Tracked by autograd, that is refused:"),
             f"{INDENT * 2}x -= {lr} * x.grad  ->  RuntimeError: {error}",
             f"{INDENT * 2}" + _("Under `with torch.no_grad():` the update is simply not recorded:"),
             f"{INDENT * 3}x {show(x)}   requires_grad {x.requires_grad}   is_leaf {x.is_leaf}   "
             f"grad_fn {name_of(x.grad_fn)}",
             f"{INDENT * 2}" + _("torch.optim.SGD(lr={lr}).step() does exactly this (its step runs under no_grad), "
                                 "and it").format(lr=lr),
             f"{INDENT * 2}" + (_("gives the same x.") if same else
                                _("gives a different x: {x}!").format(x=show(twin["x"]))),
             f"{INDENT * 2}" + _("no_grad also saves time and memory: no graph is recorded for what runs inside it.")]
    return lines, {"tracked_update_error": error, "no_grad_update": x.tolist(), "sgd_update": twin["x"].tolist(),
                   "sgd_matches": same}


SECTIONS = (forward_section, backward_section, accumulate_section, views_section, inplace_section, update_section)


def run(args) -> int:
    lines, facts = [], {}
    for section in SECTIONS:
        more, found = section()
        lines += more + [""]
        facts.update(found)
    print(json.dumps(facts, indent=2) if args.json else "\n".join(lines).rstrip())
    if not facts["agree"]:
        print(f"torchlab: autograd: x.grad {facts['x_grad']} disagrees with the hand-computed {facts['hand_grad']}"
              f" (torch.autograd.grad gave {facts['autograd_grad']})", file=sys.stderr)
        return 1
    return 0
