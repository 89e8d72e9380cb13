"""`torchlab linreg`: fit y = slope * x + intercept + noise by gradient descent.

Two ways, one trajectory. `manual` keeps w and b as plain tensors and updates
them by hand; `module` uses nn.Linear, nn.MSELoss and optim.SGD. Both start
from the same seeded parameters, so at the same --lr they take the same steps
(up to float rounding): `--method module` runs the manual method too and
reports how far apart the two were after every step. The closed-form
least-squares fit of the same sample is the best any method can do on it: the
fit's distance from it is optimisation error, its own distance from the true
line is what the noise costs. TensorBoard tags are `linreg/...`, apart from
the training runs' `train/loss`.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import torch
from torch import nn, optim

from torchlab import runinfo
from torchlab.engine import NonFiniteLoss
from torchlab.i18n import _, pad
from torchlab.runtime import pick_device
from torchlab.checks import Bounded
from torchlab.errors import UserError
from torchlab.logger import new_run_dir, open_writer, say

def add_arguments(p) -> None:
    p.add_argument("--method", choices=["manual", "module"], default="manual",
                   help=_("manual: tensors w, b and a hand-written update; module: nn.Linear + optim.SGD"))
    p.add_argument("--slope", type=float, default=3.0, action=Bounded, help=_("true slope of the line (default 3.0)"))
    p.add_argument("--intercept", type=float, default=0.8, action=Bounded, help=_("true intercept (default 0.8)"))
    p.add_argument("--noise", type=float, default=0.05, action=Bounded, lo=0, help=_("std of the Gaussian noise added to y (default 0.05)"))
    p.add_argument("--samples", type=int, default=2000, action=Bounded, lo=2, help=_("points in the sample, x uniform on [0, 1) (default 2000)"))
    p.add_argument("--steps", type=int, default=1000, action=Bounded, lo=1, help=_("gradient-descent steps on the whole sample (default 1000)"))
    p.add_argument("--lr", type=float, default=0.1, action=Bounded, lo=0, lo_open=True, help=_("learning rate, the same for both methods (default 0.1)"))
    p.add_argument("--log-every", type=int, default=100, action=Bounded, lo=1, help=_("print and log every N steps (default 100)"))
    p.add_argument("--tolerance", type=float, default=0.01, action=Bounded, lo=0, lo_open=True, help=_("report the first step this close to both true values"))
    p.add_argument("--seed", type=int, default=0, help=_("seed for the sample and the starting parameters"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--run-dir", help=_("TensorBoard log folder (default: runs/linreg-METHOD-TIME)"))
    p.add_argument("--json", action="store_true", help=_("print the results as JSON"))


def make_problem(samples: int, slope: float, intercept: float, noise: float, seed: int) -> dict:
    """The sample x [n, 1], y [n, 1] and starting parameters w0 [1, 1], b0 [1], all from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    # nn.Linear(1, 1) starts from U(-1, 1) (bound 1/sqrt(in_features)); drawn first, so they do not depend on n.
    w0 = torch.rand([1, 1], generator=g) * 2 - 1
    b0 = torch.rand([1], generator=g) * 2 - 1
    x = torch.rand([samples, 1], generator=g)
    y = slope * x + intercept + noise * torch.randn([samples, 1], generator=g)
    return {"x": x, "y": y, "init": (w0, b0)}


class Watch:
    """Per-step checks that stay on the device (no .item(), so no sync) until a log step reads them."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, truth, tolerance: float):
        self.w, self.b, self.truth, self.tolerance = w, b, truth, tolerance
        self.reached = torch.full((), -1, dtype=torch.long, device=w.device)  # first step within tolerance
        self.first_bad = torch.full((), -1, dtype=torch.long, device=w.device)  # first non-finite loss
        self.bad_loss = torch.zeros((), device=w.device)

    @torch.no_grad()
    def update(self, step: int, loss: torch.Tensor) -> None:
        new_bad = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(new_bad, step, self.first_bad)
        self.bad_loss = torch.where(new_bad, loss, self.bad_loss)
        if self.truth is not None:
            close = ((self.w - self.truth[0]).abs() <= self.tolerance).all() \
                & ((self.b - self.truth[1]).abs() <= self.tolerance).all()
            self.reached = torch.where((self.reached < 0) & close, step, self.reached)

    def check_finite(self) -> None:
        if self.first_bad.item() >= 0:
            raise NonFiniteLoss(int(self.first_bad), float(self.bad_loss))


def descend(step_fn: Callable[[], torch.Tensor], w, b, steps: int, truth, tolerance: float, log_every: int,
            on_log, trace: list | None = None) -> dict:
    """Call `step_fn` (one update, returns the detached loss) `steps` times; read values only at log steps.
    `trace` (a list) receives the parameters [slope, intercept] after every step, left on the device."""
    watch, history = Watch(w, b, truth, tolerance), []
    for step in range(1, steps + 1):
        loss = step_fn()
        watch.update(step, loss)
        if trace is not None:
            trace.append(torch.stack([w.detach().reshape(()), b.detach().reshape(())]))
        if step % log_every == 0 or step == steps:
            watch.check_finite()  # raises NonFiniteLoss naming the first bad step
            values = torch.stack([loss, w.detach().reshape(()), b.detach().reshape(())]).tolist()  # one sync
            row = {"step": step, **dict(zip(("loss", "slope", "intercept"), values))}
            history.append(row)
            if on_log is not None:
                on_log(row)
    reached = int(watch.reached)
    return {"history": history, "slope": history[-1]["slope"], "intercept": history[-1]["intercept"],
            "final_loss": history[-1]["loss"], "reached_step": reached if reached > 0 else None}


def manual_step(x, y, w, b, lr: float, zero_grads: bool = True) -> torch.Tensor:
    """One step by hand: x [n, 1], y [n, 1], w [1, 1], b [1]; returns the detached loss []."""
    loss = ((x @ w + b - y) ** 2).mean()  # [n, 1] predictions minus targets, squared, averaged to []
    loss.backward()  # adds d loss / d w into w.grad and d loss / d b into b.grad
    with torch.no_grad():  # the update is not part of the model: keep it out of the graph
        w -= lr * w.grad
        b -= lr * b.grad
    if zero_grads:
        # backward() adds into .grad, so without this step k would follow the sum of all k gradients so far.
        # It is the gradients that must be cleared; zeroing w itself (the notes' w.data.zero_()) would
        # throw away what was learned every step.
        w.grad.zero_()
        b.grad.zero_()
    return loss.detach()


def fit_manual(x, y, steps: int, lr: float, *, init, truth=None, tolerance: float = 0.01, log_every: int = 100,
               on_log=None, zero_grads: bool = True, trace: list | None = None) -> dict:
    """Gradient descent by hand on x [n, 1], y [n, 1] from init (w0 [1, 1], b0 [1]).

    Returns {"history": [{"step", "loss", "slope", "intercept"} every log_every steps and at the end],
    "slope", "intercept", "final_loss", "reached_step"}. reached_step is the first step after which both
    parameters were within `tolerance` of `truth` (slope, intercept), None if never or without truth.
    Raises NonFiniteLoss if the loss stops being finite.
    """
    w = init[0].to(x.device, copy=True).requires_grad_()  # [1, 1]
    b = init[1].to(x.device, copy=True).requires_grad_()  # [1]
    return descend(lambda: manual_step(x, y, w, b, lr, zero_grads), w, b, steps, truth, tolerance, log_every, on_log,
                   trace)


def module_step(x, y, model: nn.Module, loss_fn, optimizer) -> torch.Tensor:
    optimizer.zero_grad()  # clear last step's gradients: backward() accumulates
    loss = loss_fn(model(x), y)  # [n, 1] vs [n, 1] -> []
    loss.backward()
    optimizer.step()  # p -= lr * p.grad for each parameter, under no_grad
    return loss.detach()


def fit_module(x, y, steps: int, lr: float, *, init, truth=None, tolerance: float = 0.01, log_every: int = 100,
               on_log=None, trace: list | None = None) -> dict:
    """The same descent with nn.Linear(1, 1), nn.MSELoss and optim.SGD from the same init; returns as fit_manual."""
    model = nn.Linear(1, 1).to(x.device)  # weight [1, 1], bias [1]; computes x @ weight.T + bias
    with torch.no_grad():
        model.weight.copy_(init[0])
        model.bias.copy_(init[1])
    optimizer = optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    return descend(lambda: module_step(x, y, model, loss_fn, optimizer), model.weight, model.bias, steps, truth,
                   tolerance, log_every, on_log, trace)


def agreement(x, y, steps: int, lr: float, init, module_trace: list) -> dict:
    """The lesson of --method module: nn.Linear, MSELoss and optim.SGD take exactly the manual method's steps.
    Runs the manual method on the same problem and compares the parameters after every step."""
    manual: list = []
    try:
        fit_manual(x, y, steps, lr, init=init, log_every=steps, trace=manual)
    except NonFiniteLoss as e:  # the module fit stayed finite: the two did not agree
        return {"compared_with": "manual", "steps": steps, "max_slope_diff": None, "max_intercept_diff": None,
                "note": f"the manual method diverged: {e}"}
    diff = (torch.stack(module_trace) - torch.stack(manual)).abs().amax(0).tolist()  # [steps, 2] -> [2]
    return {"compared_with": "manual", "steps": steps, "max_slope_diff": diff[0], "max_intercept_diff": diff[1]}


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """The exact minimiser of the mean squared error on this sample, in float64: [x 1] @ [slope, b] ~ y."""
    a = torch.cat([x, torch.ones_like(x)], dim=1).double().cpu()  # [n, 2]
    solution = torch.linalg.lstsq(a, y.double().cpu()).solution  # [2, 1]
    return solution[0, 0].item(), solution[1, 0].item()


def stable_lr(x: torch.Tensor) -> float:
    """Gradient descent on this loss converges only for lr < 2 / (largest eigenvalue of its Hessian 2 A^T A / n)."""
    a = torch.cat([x, torch.ones_like(x)], dim=1).double().cpu()  # [n, 2]
    return 2 / torch.linalg.eigvalsh(2 * a.T @ a / len(a)).max().item()


def log_row(writer, row: dict) -> None:
    say(f"{row['step']:>7}  {row['loss']:>12.6g}  {row['slope']:>9.5f}  {row['intercept']:>9.5f}")
    for tag, key in (("linreg/loss", "loss"), ("linreg/slope", "slope"), ("linreg/intercept", "intercept")):
        writer.add_scalar(tag, row[key], row["step"])


def run(args) -> int:
    device = pick_device(args.device)
    problem = make_problem(args.samples, args.slope, args.intercept, args.noise, args.seed)
    x, y = problem["x"].to(device), problem["y"].to(device)
    run_dir = new_run_dir(args.run_dir, f"linreg-{args.method}")
    runinfo.write_demo(run_dir, "linreg", method=args.method)  # `torchlab runs`: a demo's logs, not a run
    w0, b0 = problem["init"]
    say(_("start (seed {seed}, same for both methods): slope {slope}, intercept {intercept}").format(
        seed=args.seed, slope=f"{w0.item():.5f}", intercept=f"{b0.item():.5f}"))
    say("  ".join(pad(word, width, right=True) for word, width in
                  ((_("step"), 7), (_("loss"), 12), (_("slope"), 9), (_("intercept"), 9))))
    fit = fit_manual if args.method == "manual" else fit_module
    writer, tic, trace = open_writer(run_dir), time.perf_counter(), [] if args.method == "module" else None
    try:
        result = fit(x, y, args.steps, args.lr, init=problem["init"], truth=(args.slope, args.intercept),
                     tolerance=args.tolerance, log_every=args.log_every, on_log=lambda row: log_row(writer, row),
                     trace=trace)
    except NonFiniteLoss as e:
        hint = _("use a smaller --lr: this sample needs lr < {bound}; logs so far in {run_dir}").format(
            bound=f"{stable_lr(x):.3g}", run_dir=run_dir)
        raise UserError(_("linreg diverged: {error} with --lr {lr}").format(error=e, lr=f"{args.lr:g}"), hint) from None
    finally:
        writer.close()
    seconds = time.perf_counter() - tic
    best = least_squares(x, y)
    report = {"method": args.method, "device": str(device), "samples": args.samples, "steps": args.steps,
              "lr": args.lr, "noise": args.noise, "seed": args.seed, "tolerance": args.tolerance,
              "true": {"slope": args.slope, "intercept": args.intercept},
              "fitted": {"slope": result["slope"], "intercept": result["intercept"]},
              "least_squares": {"slope": best[0], "intercept": best[1]}, "final_loss": result["final_loss"],
              "reached_step": result["reached_step"], "seconds": seconds, "run_dir": str(run_dir),
              "history": result["history"]}
    if trace is not None:
        report["agreement"] = agreement(x, y, args.steps, args.lr, problem["init"], trace)
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def report_text(r: dict) -> str:
    true, fit, best, tol = r["true"], r["fitted"], r["least_squares"], r["tolerance"]
    within = all(abs(fit[k] - true[k]) <= tol for k in true)
    if r["reached_step"] is None:
        reached = _("never within {tol} of both true values in {steps} steps (not reached)").format(
            tol=f"{tol:g}", steps=r["steps"])
    else:
        reached = _("first within {tol} of both true values at step {step}").format(
            tol=f"{tol:g}", step=r["reached_step"]) + ("" if within else _(", but not at the end"))
    row = lambda name, slope, intercept, note: f"  {pad(name, 15)}{slope:>10.5f}{intercept:>11.5f}   {note}".rstrip()
    return "\n".join([
        _("linreg, {method} on {device}: {samples} points of y = {slope} x + {intercept} + noise (std {noise}); "
          "{steps} steps at lr {lr}, {seconds} s").format(
            method=r["method"], device=r["device"], samples=r["samples"], slope=f"{true['slope']:g}",
            intercept=f"{true['intercept']:g}", noise=f"{r['noise']:g}", steps=r["steps"], lr=f"{r['lr']:g}",
            seconds=f"{r['seconds']:.2f}"),
        "", f"  {'':<15}{pad(_('slope'), 10, True)}{pad(_('intercept'), 11, True)}",
        row(_("true"), true["slope"], true["intercept"], ""),
        row(_("fitted"), fit["slope"], fit["intercept"], _("final loss {loss}").format(loss=f"{r['final_loss']:.6g}")),
        row(_("least squares"), best["slope"], best["intercept"],
            _("closed form: the best any method can do on this sample")),
        "",
        "  " + _("fitted - least squares: {slope}, {intercept}   (optimisation error: more steps shrink it)").format(
            slope=f"{fit['slope'] - best['slope']:+.2e}", intercept=f"{fit['intercept'] - best['intercept']:+.2e}"),
        "  " + _("least squares - true:   {slope}, {intercept}   (what the noise costs: more --samples shrink it)"
                 ).format(slope=f"{best['slope'] - true['slope']:+.2e}",
                          intercept=f"{best['intercept'] - true['intercept']:+.2e}"),
        f"  {reached}",
        *([agreement_text(r["agreement"])] if "agreement" in r else []),
        f"  TensorBoard: torchlab tensorboard {r['run_dir']}"])


def agreement_text(a: dict) -> str:
    if a["max_slope_diff"] is None:
        return "  " + _("not the same steps as --method manual: {note}").format(note=a["note"])
    worst = max(a["max_slope_diff"], a["max_intercept_diff"])
    verdict = _("step for step the same as") if worst <= 1e-5 else _("NOT step for step the same as")
    return ("  " + _("{verdict} --method manual: after each of the {steps} steps the parameters differ by at most "
                     "{slope} (slope) and {intercept} (intercept)").format(
                verdict=verdict, steps=a["steps"], slope=f"{a['max_slope_diff']:.1e}",
                intercept=f"{a['max_intercept_diff']:.1e}")
            + (_(", float rounding") if worst <= 1e-5 else ""))
