"""Validation and test perplexity of `torchlab train lm` for each cell, on timemachine and tang (char level).

    python benchmarks/lm_perplexity.py --data-dir ../shared/data
    python benchmarks/lm_perplexity.py --corpora timemachine --cells lstm --extra "--epochs 30"

Each row is one full training run through the CLI with the default settings
(plus `--extra`; tang, 20 times larger, gets one epoch of a smaller model by
default, see `--tang-extra`). The
baseline row is a unigram model: every token predicted with its training
frequency, the perplexity any model must beat.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from run_cli import torchlab_json
from torchlab.data.corpora import load_corpus
from torchlab.data.text import split_documents, tokenize

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data"


def unigram_ppl(corpus: str, data_dir: Path) -> float:
    """Perplexity on the test split of predicting each character by its (add-one smoothed) training frequency."""
    c = load_corpus(corpus, str(data_dir))
    splits = split_documents([tokenize(d, "char", c.language) for d in c.documents], shuffle=len(c.documents) > 1)
    counts, total = Counter(splits.train), len(splits.train)
    vocab = len(counts) + 1  # + <unk>
    nll = -sum(math.log((counts.get(t, 0) + 1) / (total + vocab)) for t in splits.test[1:])
    return math.exp(nll / (len(splits.test) - 1))


def one_run(corpus: str, cell: str, data_dir: Path, extra: list[str], workdir: Path) -> dict:
    tic = time.perf_counter()
    s = torchlab_json(["train", "lm", "--corpus", corpus, "--cell", cell, "--data-dir", str(data_dir), "--run-dir",
                       str(workdir / f"{corpus}-{cell}"), *extra])
    return {"corpus": corpus, "cell": cell, "best_val_ppl": s["best_val_ppl"], "best_epoch": s["best_epoch"],
            "test_ppl": s["test_ppl"], "epochs": s["epochs"], "steps": s["steps"], "train_seconds": s["train_seconds"],
            "tokens_per_second": s["tokens_per_second"], "wall_seconds": round(time.perf_counter() - tic, 1),
            "vocab": s["vocab_size"], "flags": " ".join(extra)}


def main_bench(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--corpora", nargs="+", default=["timemachine", "tang"])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    ap.add_argument("--extra", default="", help="more `torchlab train lm` flags for every run, as one string")
    ap.add_argument("--tang-extra", default="--epochs 1 --embed-size 128 --hidden-size 256 --batch-size 64",
                    help="flags added for tang, which is 20x the size of timemachine")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in args.corpora:
            extra = shlex.split(args.extra)
            if corpus == "tang":
                extra += shlex.split(args.tang_extra)
            for cell in args.cells:
                rows.append(one_run(corpus, cell, args.data_dir, extra, Path(tmp)))
                print(f"done {corpus}/{cell}: test ppl {rows[-1]['test_ppl']:.3f}", file=sys.stderr, flush=True)
    print(f"{'corpus':<12} {'model':<22} {'val ppl':>8} {'test ppl':>9} {'epochs':>7} {'steps':>6} "
          f"{'train s':>8} {'tok/s':>7}")
    for corpus in args.corpora:
        print(f"{corpus:<12} {'unigram (baseline)':<22} {'':>8} {unigram_ppl(corpus, args.data_dir):>9.3f}")
        for r in (r for r in rows if r["corpus"] == corpus):
            print(f"{corpus:<12} {r['cell'] + ' (best epoch ' + str(r['best_epoch']) + ')':<22} "
                  f"{r['best_val_ppl']:>8.3f} {r['test_ppl']:>9.3f} {r['epochs']:>7} {r['steps']:>6} "
                  f"{r['train_seconds']:>8.1f} {r['tokens_per_second']:>7.0f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
