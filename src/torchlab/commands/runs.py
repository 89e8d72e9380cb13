"""`torchlab runs [DIR]`: the runs under a folder as one table, newest first.

Each run is read from its summary.json (see runinfo.py); checkpoints are never
loaded, so listing hundreds of runs stays instant. The demos' log folders
(linreg, conv-viz, image --logdir) are not runs: one line on stderr counts them.
"""

from __future__ import annotations

import json
from pathlib import Path

from torchlab import runinfo
from torchlab.errors import UserError
from torchlab.i18n import N_, _, shown_width
from torchlab.logger import say

COLUMNS = ("run", "task", "model", "epochs", "best_val", "test", "duration", "date", "status")


def add_arguments(p) -> None:
    p.add_argument("dir", nargs="?", default="runs", help=_("folder holding run directories (default: runs)"))
    p.add_argument("--sort", default="date", choices=COLUMNS, help=_("column to sort by (default: date, newest first)"))
    p.add_argument("--reverse", action="store_true", help=_("reverse the order"))
    p.add_argument("--json", action="store_true", help=_("print the runs as JSON"))


def row(summary: dict, root: Path) -> dict:
    """One table row: raw values (None when unknown); metrics are accuracy for images, perplexity for text."""
    lm = summary.get("task") == "lm"
    split = summary.get("scored_split", "test")
    model = f"{summary.get('cell', '?')} ({summary.get('corpus', '?')})" if lm else summary.get("model")
    path = Path(summary["run_dir"])
    return {
        "run": str(path.relative_to(root)) if path != root and path.is_relative_to(root) else str(path),
        "task": summary.get("task"), "model": model,
        "epochs": summary.get("epochs"), "epochs_done": summary.get("epochs_done", summary.get("epochs")),
        "epochs_planned": summary.get("epochs_planned"),
        "metric": "ppl" if lm else "acc",
        "best_val": summary.get("best_val_ppl" if lm else "best_val_acc"),
        "test": summary.get("test_ppl" if lm else f"{split}_acc"), "test_split": "test" if lm else split,
        "duration": summary.get("train_seconds"), "date": summary.get("started"),
        "status": summary["shown"], "ended": summary.get("status"), "resume": summary["resume"],
        "path": str(path),
    }


def metric_text(value, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if metric == "ppl" else f"{value:.2%}"


def duration_text(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else (f"{m}m{s:02d}s" if m else f"{s}s")


def cells(r: dict) -> list[str]:
    epochs = runinfo.epochs_text(r) + (f"/{r['epochs_planned']}" if r["epochs_planned"] and r["epochs"] is not None
                                       else "")
    test = metric_text(r["test"], r["metric"]) + (" (val)" if r["test_split"] == "val" and r["test"] is not None else "")
    return [r["run"], r["task"] or "-", r["model"] or "-", epochs, metric_text(r["best_val"], r["metric"]), test,
            duration_text(r["duration"]), r["date"] or "-", _(r["status"])]


HEADER = (N_("run"), N_("task"), N_("model"), N_("epochs"), N_("best val"), N_("test"), N_("duration"), N_("started"),
          N_("status"))


def table(rows: list[dict]) -> str:
    header = [_(h) for h in HEADER]
    body = [cells(r) for r in rows]
    widths = [max(shown_width(line[i]) for line in [header, *body]) for i in range(len(header))]
    right = {3, 4, 5, 6}  # numbers line up on the right

    def padded(i: int, c: str, w: int) -> str:
        space = " " * (w - shown_width(c))
        return space + c if i in right else c + space

    lines = ["  ".join(padded(i, c, w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
             for line in [header, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def sort_rows(rows: list[dict], column: str, reverse: bool) -> list[dict]:
    """Sort by a column, unknown values last; dates newest first unless --reverse."""
    newest_first = column == "date"
    known = [r for r in rows if r[column] is not None]
    unknown = [r for r in rows if r[column] is None]
    known.sort(key=lambda r: (r[column], r["run"]), reverse=newest_first != reverse)
    return known + unknown


def names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:5]) + (" ..." if len(paths) > 5 else "")


def continue_line(r: dict) -> str:
    """What to do about a run that can go on: a killed or interrupted one resumes, a --max-steps one finishes."""
    if r["ended"] == "max-steps":
        return _("{run} stopped at --max-steps after {epochs} epochs; finish it with: {resume}") \
            .format(run=r['run'], epochs=runinfo.epochs_text(r), resume=r['resume'])
    if r["ended"] == "running":
        return _("{run} was killed; continue it with: {resume}").format(run=r['run'], resume=r['resume'])
    return _("{run} stopped ({ended}); continue it with: {resume}").format(run=r['run'], ended=r['ended'],
                                                                             resume=r['resume'])


def run(args) -> int:
    root = Path(args.dir)
    paths, demos, foreign = runinfo.find(root)
    rows = sort_rows([row(runinfo.read(p), root) for p in paths], args.sort, args.reverse)
    if demos:
        kinds = sorted({runinfo.demo_of(p) for p in demos})
        say(_("not listed: {count} demo log folder(s) of {kinds} (no training run): {names}")
            .format(count=len(demos), kinds=', '.join(kinds), names=names(demos)))
    if foreign:
        say(_("skipped {count} folder(s) that hold no run: {names}").format(count=len(foreign), names=names(foreign)))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        raise UserError(_("{root}: holds no runs").format(root=root),
                        _("train one with `torchlab train fashion-mnist --run-dir {root}/first`, or give the folder "
                          "your runs are in").format(root=root))
    print(table(rows))
    for r in rows:
        if r["resume"]:
            print(continue_line(r))
    return 0
