"""How many gradient-descent steps `torchlab linreg` needs to get within 0.01 of the true line.

Fits y = 3x + 0.8 (+ noise) with both methods, several seeds, at two settings:

  defaults  torchlab's: noise 0.05, 2000 samples, 1000 steps, lr 0.1 for both methods
  notes     the notes':  noise 0, 500 samples, up to 5000 steps, lr 0.05 by hand and 0.01 with nn.Linear + SGD

For each it reports the first step at which both parameters were within the
tolerance of the true values, the final errors and the wall time of one fit.

    python benchmarks/linreg_steps.py --seeds 5 --json-out linreg_steps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from torchlab.runtime import pick_device
from torchlab.commands.linreg import fit_manual, fit_module, make_problem

SLOPE, INTERCEPT = 3.0, 0.8
# setting -> (noise, samples, steps, {method: lr})
SETTINGS = {
    "defaults": (0.05, 2000, 1000, {"manual": 0.1, "module": 0.1}),
    "notes": (0.0, 500, 5000, {"manual": 0.05, "module": 0.01}),
}
FITS = {"manual": fit_manual, "module": fit_module}


def one_fit(setting: str, method: str, seed: int, tolerance: float, device: torch.device) -> dict:
    noise, samples, steps, lrs = SETTINGS[setting]
    p = make_problem(samples, SLOPE, INTERCEPT, noise, seed)
    x, y = p["x"].to(device), p["y"].to(device)
    tic = time.perf_counter()
    # log_every=steps: values are read back from the device once, at the end
    r = FITS[method](x, y, steps, lrs[method], init=p["init"], truth=(SLOPE, INTERCEPT), tolerance=tolerance,
                     log_every=steps)
    seconds = time.perf_counter() - tic
    return {"setting": setting, "method": method, "seed": seed, "lr": lrs[method], "steps": steps,
            "reached_step": r["reached_step"], "slope_error": r["slope"] - SLOPE,
            "intercept_error": r["intercept"] - INTERCEPT, "seconds": seconds}


def table(records: list[dict], tolerance: float) -> str:
    lines = [f"steps until slope and intercept are both within {tolerance:g} of (3.0, 0.8); '-' = not reached",
             f"{'setting':<9} {'method':<7} {'lr':>5} {'max':>5}  {'steps per seed':<28} {'median':>6}  "
             f"{'max|slope err|':>14} {'max|icpt err|':>13} {'s/fit':>6}"]
    for setting, method in dict.fromkeys((r["setting"], r["method"]) for r in records):
        rows = [r for r in records if r["setting"] == setting and r["method"] == method]
        reached = [r["reached_step"] for r in rows]
        done = [s for s in reached if s is not None]
        median = f"{statistics.median(done):.0f}" if len(done) == len(reached) else "-"
        per_seed = " ".join("-" if s is None else str(s) for s in reached)
        lines.append(f"{setting:<9} {method:<7} {rows[0]['lr']:>5g} {rows[0]['steps']:>5}  {per_seed:<28} {median:>6}  "
                     f"{max(abs(r['slope_error']) for r in rows):>14.2e} "
                     f"{max(abs(r['intercept_error']) for r in rows):>13.2e} "
                     f"{statistics.mean(r['seconds'] for r in rows):>6.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--json-out", help="also write every fit's record to this JSON file")
    args = parser.parse_args()
    device = pick_device(args.device)
    one_fit("defaults", "manual", 0, args.tolerance, device)  # warm-up: first calls pay one-off setup costs
    records = [one_fit(setting, method, seed, args.tolerance, device)
               for setting in SETTINGS for method in FITS for seed in range(args.seeds)]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(table(records, args.tolerance))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"device": str(device), "tolerance": args.tolerance, "records": records}, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
