"""Training throughput of the language model: torch.nn's fused RNN/LSTM/GRU vs `Recurrent` from scratch.

One training step is what `LanguageModel` does in truncated BPTT: forward over a
[batch, bptt] chunk of tokens with the state carried over (detached) from the
previous chunk, cross-entropy, backward, AdamW step. The two implementations of
each cell get the same weights and the same batches, and their steps alternate
(torch, scratch, torch, ...), so a change in the machine's load affects both.
Warm-up steps are not timed; the table gives the median of the timed steps.

    python benchmarks/rnn_throughput.py                       # batch 32, bptt 128, 256/512, 2 layers
    python benchmarks/rnn_throughput.py --cells lstm --steps 10 --json-out rnn_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from torchlab.models.rnn import LanguageModel, LMConfig

IMPLS = ("torch", "scratch")


def make_models(cell: str, args: argparse.Namespace) -> dict[str, LanguageModel]:
    models = {}
    for impl in IMPLS:
        cfg = LMConfig(vocab_size=args.vocab, cell=cell, impl=impl, embed_size=args.embed, hidden_size=args.hidden,
                       layers=args.layers, dropout=args.dropout)
        models[impl] = LanguageModel(cfg).train()
    models["scratch"].load_state_dict(models["torch"].state_dict())  # same names, same weights
    return models


def trainer(model: LanguageModel, args: argparse.Namespace):
    """A closure doing one timed training step on the next batch; returns its seconds."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    state = model.init_state(args.batch_size, torch.device("cpu"))

    def step() -> float:
        nonlocal state
        tokens = torch.randint(0, args.vocab, (args.batch_size, args.bptt + 1), generator=gen)
        tic = time.perf_counter()
        logits, state = model(tokens[:, :-1], LanguageModel.detach_state(state))
        loss = F.cross_entropy(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - tic

    return step


def measure(cell: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    steps = {impl: trainer(model, args) for impl, model in make_models(cell, args).items()}
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(args.warmup + args.steps):
        for impl in IMPLS:  # alternate, so both see the same machine load
            seconds = steps[impl]()
            if i >= args.warmup:
                times[impl].append(seconds)
    tokens = args.batch_size * args.bptt
    record = {"cell": cell}
    for impl in IMPLS:
        median = statistics.median(times[impl])
        record[impl] = {"median_s": median, "tokens_per_s": tokens / median, "step_s": times[impl]}
    record["ratio"] = record["scratch"]["median_s"] / record["torch"]["median_s"]
    return record


def table(records: list[dict]) -> str:
    lines = [f"{'cell':<5} {'torch tok/s':>12} {'scratch tok/s':>14} {'torch/scratch':>14}"]
    for r in records:
        lines.append(f"{r['cell']:<5} {r['torch']['tokens_per_s']:>12,.0f} {r['scratch']['tokens_per_s']:>14,.0f} "
                     f"{r['ratio']:>13.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="+", default=["rnn", "lstm", "gru"], choices=["rnn", "lstm", "gru"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=128, help="time steps per training chunk")
    parser.add_argument("--embed", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=70, help="about the characters of The Time Machine")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json-out", help="also write the step times to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; batch {args.batch_size}, "
          f"bptt {args.bptt}, embed {args.embed}, hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    records = []
    for cell in args.cells:
        records.append(measure(cell, args))
        print(table(records[-1:]).splitlines()[-1] if len(records) > 1 else table(records), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "settings": vars(args),
                       "records": records}, f, indent=2)
        print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
