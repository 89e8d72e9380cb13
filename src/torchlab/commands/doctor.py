"""`torchlab doctor`: what this machine is, and what torchlab will do on it.

It prints the versions, the devices, the CPU and its features, the threads,
the measured matmul and convolution rates, what `auto` picks and why, which
datasets are found where, and whether TensorBoard and Chromium are there.
The rates are measured once (a few seconds) and cached with the training
settings (hardware.py); `--measure` also times the recipes' own training
steps now, so that the first training runs start without measuring.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil

import torch

from torchlab import __version__, hardware, malloc, runtime
from torchlab.errors import UserError
from torchlab.i18n import _

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help=_("print everything as JSON"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help=_("the device whose settings to report (default: auto)"))
    p.add_argument("--measure", action="store_true",
                   help=_("also time the training step of each recipe's model now (about a minute; cached)"))
    p.add_argument("--data-dir", help=_("also look for the datasets here"))


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def devices() -> list[dict]:
    found = [{"device": "cpu", "name": hardware.device_name(torch.device("cpu"))}]
    if torch.cuda.is_available():
        found += [{"device": f"cuda:{i}", "name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append({"device": "mps", "name": hardware.device_name(torch.device("mps"))})
    return found


def auto_choices(device: torch.device, measure: bool) -> dict:
    """What `auto` decides on `device`: the precision rule from the rates, the fast recipe's table, and the
    settings measured for each workload in the cache (with `measure`, the recipes' workloads first)."""
    from torchlab.recipes import device_kind

    rates = hardware.rates(device, convs=True)
    speedup = rates["matmul bf16"] / max(rates["matmul fp32"], 1e-9)
    why = (f"bf16 matmul runs at {speedup:.2g}x the fp32 rate: "
           + ("bf16 is tried against fp32 on each run's own training step" if speedup >= 0.5 else
              "bf16 is emulated here, so auto never tries it"))
    if measure:
        measure_recipes(device)
    measured = {}
    for name, timings in (hardware.load_cache()["machines"].get(hardware.machine_key(device), {})
                          .get("choices", {}).items()):
        ok = {label: t["rate"] for label, t in timings.items() if t.get("rate")}
        if ok:
            measured[name] = {"fastest": max(ok, key=ok.get), "items_per_second": {k: round(v, 1) for k, v in ok.items()},
                              "failed": {k: t["error"] for k, t in timings.items() if t.get("error")}}
    return {"device": str(device), "precision": "fp32 or bf16, measured per run" if speedup >= 0.5 else "fp32",
            "why": why, "fast_recipe_table": device_kind(device.type), "measured": measured}


def measure_recipes(device: torch.device) -> None:
    """Time each recipe's training step on Fashion-MNIST's image shape, as `torchlab train` would."""
    from torchlab.config import resolve
    from torchlab.models.registry import model_config
    from torchlab.tasks import classify

    targets = [("notes", 94), ("strong", 94)] + [("fast", t) for t in (91, 93, 94)]
    for recipe, target in targets:
        cfg = resolve({"recipe": recipe, "target": target, "device": device.type})
        mcfg = model_config(cfg.model)  # 1 x 28 x 28, 10 classes
        steps = cfg.epochs * (55_000 // cfg.batch_size)
        runtime.choose(device, runtime.Requested.of(cfg), classify.workload(cfg, mcfg, (1, 28, 28), steps))


def datasets(data_dir: str | None) -> dict:
    """Where each dataset is found (looking only on disk), or why not."""
    from torchlab.data import cifar, corpora
    from torchlab.data.locate import locate
    from torchlab.data.vision import DATASETS

    finders = {name: (lambda spec=spec.files: locate(spec, data_dir, offline=True)[1]) for name, spec in DATASETS.items()}
    finders["cifar10"] = lambda: locate(cifar.FILES, data_dir, offline=True)[1]
    finders["timemachine"] = lambda: corpora.locate_timemachine(data_dir, offline=True)[1]
    finders["tang"] = lambda: corpora.locate_tang(data_dir)[1]
    found = {}
    for name, find in finders.items():
        try:
            found[name] = {"found": True, "where": find()}
        except UserError as e:
            found[name] = {"found": False, "why": e.message}
    return found


def report(args) -> dict:
    device = runtime.pick_device(args.device)
    cpu = hardware.cpu_info()
    return {
        "torchlab": __version__, "torch": torch.__version__, "torchvision": version_of("torchvision"),
        "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}",
        "devices": devices(),
        "cpu": {k: cpu[k] for k in ("model", "features", "capability", "cores")},
        "threads": torch.get_num_threads(),
        "allocator": malloc.describe(),
        "feature_limits": {v: os.environ[v] for v in hardware.FEATURE_VARIABLES + hardware.THREAD_VARIABLES
                           if v in os.environ},
        "rates_gflops": {k: round(v, 2) for k, v in hardware.rates(device, convs=True).items()},
        "auto": auto_choices(device, args.measure),
        "datasets": datasets(args.data_dir),
        "tools": {"tensorboard": version_of("tensorboard"),
                  "chromium": next((p for p in map(shutil.which, CHROMIUMS) if p), None)},
        "cache": str(hardware.cache_file()),
    }


def text(r: dict) -> str:
    cpu = r["cpu"]
    lines = [f"torchlab {r['torchlab']}, torch {r['torch']}, torchvision {r['torchvision']}, Python {r['python']}, "
             f"{r['platform']}",
             _("devices: {devices}").format(devices=", ".join(f"{d['device']} ({d['name']})" for d in r["devices"])),
             _("CPU: {model}, {cores} cores; features: {features}; torch's kernels: {capability}; threads: {threads}; "
               "memory allocator: {allocator}").format(
                 model=cpu["model"], cores=cpu["cores"], features=", ".join(cpu["features"]) or _("none named"),
                 capability=cpu["capability"], threads=r["threads"], allocator=r["allocator"])]
    if r["feature_limits"]:
        lines.append(_("limited by: {limits}").format(limits=" ".join(f"{k}={v}" for k, v in r["feature_limits"].items())))
    lines += auto_lines(r["auto"], r["rates_gflops"])
    for name, d in r["datasets"].items():
        lines.append(_("dataset {name}: {where}").format(name=name, where=d["where"] if d["found"] else _("not found")))
    tools = r["tools"]
    lines.append(_("tensorboard: {tensorboard}; chromium (browser tests): {chromium}").format(
        tensorboard=tools["tensorboard"] or _("not installed"), chromium=tools["chromium"] or _("not found")))
    lines.append(_("cache: {path}").format(path=r["cache"]))
    return "\n".join(lines)


def auto_lines(auto: dict, rates: dict) -> list[str]:
    """What `auto` decides, in the user's language (the JSON keeps auto["why"] in English)."""
    speedup = rates["matmul bf16"] / max(rates["matmul fp32"], 1e-9)
    why = _("bf16 matmul runs at {speedup}x the fp32 rate: ").format(speedup=f"{speedup:.2g}") + (
        _("bf16 is tried against fp32 on each run's own training step") if speedup >= 0.5
        else _("bf16 is emulated here, so auto never tries it"))
    precision = _("fp32 or bf16, measured per run") if speedup >= 0.5 else "fp32"
    lines = [_("measured on {device} (GFLOP/s): {rates}").format(
                 device=auto["device"], rates=", ".join(f"{k} {v:,.1f}" for k, v in rates.items())),
             _("auto precision: {precision} ({why})").format(precision=precision, why=why),
             _("--recipe fast uses its {table} table").format(table=repr(auto["fast_recipe_table"]))]
    if not auto["measured"]:
        lines.append(_("settings per model: none measured yet (the first long run of each measures; "
                       "`torchlab doctor --measure` times the recipes now)"))
    for name, m in auto["measured"].items():
        lines.append(f"  {name}: {m['fastest']} (" + ", ".join(f"{k} {v:,.0f}/s" for k, v in
                                                                m["items_per_second"].items()) + ")"
                     + "".join(_("; {label} failed: {error}").format(label=k, error=e) for k, e in m["failed"].items()))
    return lines


def run(args) -> int:
    r = report(args)
    print(json.dumps(r, indent=2) if args.json else text(r))
    return 0
