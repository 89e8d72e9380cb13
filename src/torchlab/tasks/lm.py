"""Language models: `torchlab train lm --corpus timemachine|tang|PATH`.

The text is tokenised, split into contiguous train / val / test streams (the
last 5% is test, the 5% before it val) and numbered with a vocabulary built
from the training split alone. Training cuts the B parallel training streams
into windows of `bptt` tokens (truncated back-propagation through time): the
hidden state flows from one window to the next, but its history is cut
(`detach_state`) so each backward pass stays `bptt` steps long. Evaluation
scores every target token of a split exactly once; perplexity = exp(mean loss).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from torchlab import checkpoint as ckpt_io
from torchlab import distributed, runinfo, runtime
from torchlab.config import LMTrainConfig
from torchlab.data.corpora import load_corpus
from torchlab.data.text import (Vocab, batchify, batchify_eval, split_documents, tokenize, window_starts,
                                windows)
from torchlab.engine import NonFiniteLoss, StopFlag, check_finite, weight_average
from torchlab.errors import Interrupted, UserError
from torchlab.logger import Nothing, open_writer, progress, say
from torchlab.models.rnn import LanguageModel, LMConfig
from torchlab.runtime import Runtime
from torchlab.tasks.classify import build_optimizer, create_run_dir, non_finite_error, supervise

VAL_FRACTION = TEST_FRACTION = 0.05


@dataclass
class LMState:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # windows done in the current epoch (non-zero after Ctrl-C or --max-steps)
    global_step: int = 0
    best_ppl: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0
    tokens_seen: int = 0
    history: list = field(default_factory=list)


@dataclass
class TextData:
    vocab: Vocab
    train: torch.Tensor  # [B, L] token ids: B contiguous slices of the training text, on the device
    val: list  # blocks of streams from batchify_eval, on the device
    test: list
    counts: dict  # tokens per split
    source: str


def prepare_text(cfg: LMTrainConfig, device: torch.device, vocab: Vocab | None = None) -> TextData:
    """Read, split and number the corpus; a resumed run passes its saved `vocab` so ids keep their meaning."""
    corpus, splits = split_corpus(cfg)
    if vocab is None:
        vocab = Vocab.build(splits.train, cfg.level)  # never sees val or test: their new tokens become <unk>
    elif set(splits.train) - set(vocab.tokens):
        say(f"warning: {cfg.corpus} changed since the run started: {len(set(splits.train) - set(vocab.tokens))} "
            "training token types are not in the saved vocabulary and are read as <unk>")
    world = distributed.WORLD
    train = batchify(vocab.encode(splits.train), cfg.batch_size)[world.slice_of_batch(cfg.batch_size)].to(device)
    if train.shape[1] - 1 < cfg.bptt:
        raise UserError(f"--bptt {cfg.bptt}: the training streams hold only {train.shape[1]} tokens each "
                        f"({len(splits.train)} tokens / batch size {cfg.batch_size}); a window needs bptt + 1",
                        "use a smaller --bptt or --batch-size, or a longer text")
    # Each process scores its share of the streams of every evaluation block.
    blocks = [[b[world.part(len(b))].to(device) for b in batchify_eval(vocab.encode(part), cfg.eval_batch_size)
               if len(b[world.part(len(b))])] for part in (splits.val, splits.test)]
    counts = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    return TextData(vocab, train, blocks[0], blocks[1], counts, corpus.source)


def split_corpus(cfg: LMTrainConfig):
    """The corpus and its train/val/test token lists, as every run with these settings splits it."""
    corpus = load_corpus(cfg.corpus, cfg.data_dir or None, cfg.script, cfg.encoding)
    docs = [tokenize(doc, cfg.level, corpus.language) for doc in corpus.documents]
    return corpus, split_documents(docs, VAL_FRACTION, TEST_FRACTION, cfg.seed, shuffle=len(docs) > 1)


def epoch_offset(seed: int, epoch: int, bptt: int) -> int:
    """Where this epoch's first window starts: moves the window edges each epoch, repeatably."""
    return int(torch.randint(bptt, (1,), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)))


def lm_loss(model, x: torch.Tensor, y: torch.Tensor, state, rt: Runtime, reduction: str = "mean"):
    """Cross-entropy of next-token logits: x, y [B, T] -> loss, new state."""
    with rt.autocast():
        logits, state = model(x, state)  # [B, T, V]
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction=reduction), state


def lm_step(model, x: torch.Tensor, y: torch.Tensor, state, optimizer, rt: Runtime, clip: float):
    """One update from windows x, y [B, T] starting from `state` (detached); returns (loss, new state)."""
    loss, state = lm_loss(model, x, y, state, rt)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss, state


def evaluate_lm(model, blocks: list, bptt: int, rt: Runtime) -> dict:
    """Mean loss over every target of a split (each scored once) and its perplexity."""
    model.eval()
    total, count = torch.zeros((), device=rt.device), torch.zeros((), dtype=torch.long, device=rt.device)
    bar = progress(sum(len(window_starts(block.shape[1], bptt)) for block in blocks), "evaluating", "window")
    with torch.inference_mode():
        for block in blocks:  # [B, M + 1] streams; each block starts from a zero state
            state = None
            for x, y in windows(block, bptt):
                loss, state = lm_loss(model, x, y, state, rt, reduction="sum")
                total += loss
                count += y.numel()
                bar.update(1)
    bar.close()
    distributed.all_sum(total, count)  # every process scored its own streams
    loss = total.item() / int(count)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(count)}


@dataclass
class Session:
    cfg: LMTrainConfig
    data: TextData
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    scheduler: object
    rt: Runtime
    state: LMState
    run_dir: Path
    writer: object
    hidden: object = None  # the state carried from window to window
    average: object = None  # AveragedModel with --ema: the weights that are validated, kept and tested
    wrapped: object = None  # DistributedDataParallel(model) with several processes, for the training forward

    @property
    def scored(self) -> LanguageModel:
        return self.average.module if self.average is not None else self.model

    def windows_per_epoch(self, epoch: int) -> int:
        offset = epoch_offset(self.cfg.seed, epoch, self.cfg.bptt)
        return len(window_starts(self.data.train.shape[1], self.cfg.bptt, offset))

    def save(self, name: str) -> Path:
        """Every process calls this (it gathers their hidden states and random states); rank 0 writes."""
        hidden = self.hidden if isinstance(self.hidden, tuple) else (self.hidden,) if self.hidden is not None else ()
        hidden = [distributed.gather_rows(h.detach(), dim=1) for h in hidden]  # [L, B/N, H] -> [L, B, H]
        ckpt = {
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "task": "lm", "model_name": f"lm-{self.cfg.cell}",
            "model_config": dataclasses.asdict(self.model.config), **ckpt_io.model_states(self.model, self.average),
            "optimizer_state": self.optimizer.state_dict(),
            "scheduler_state": self.scheduler.state_dict() if self.scheduler is not None else None,
            "train_config": dataclasses.asdict(self.cfg), "state": dataclasses.asdict(self.state),
            **ckpt_io.rng_states(), "vocab": self.data.vocab.to_dict(),
            "hidden": [h.cpu() for h in hidden],  # mid-epoch resume continues from this state
        }
        path = self.run_dir / name
        if distributed.WORLD.main:
            ckpt_io.atomic_save(ckpt, path)
        return path


def train_steps(s: Session, stop: StopFlag) -> dict:
    """Train over the rest of the current epoch's windows; returns {"loss", "tokens", "steps", "stopped"}."""
    cfg, state, model = s.cfg, s.state, s.model
    model.train()
    start = state.step_in_epoch
    batches = windows(s.data.train, cfg.bptt, epoch_offset(cfg.seed, state.epoch, cfg.bptt))
    bar = progress(s.windows_per_epoch(state.epoch) - start, f"epoch {state.epoch + 1}/{cfg.epochs}", "tok",
                   cfg.batch_size * cfg.bptt)
    loss_sum, tokens, pending, stopped = torch.zeros((), device=s.rt.device), 0, [], False
    for x, y in itertools.islice(batches, start, None):
        if distributed.should_stop(stop, state.global_step, s.rt.device) or \
                (cfg.max_steps and state.global_step >= cfg.max_steps):
            stopped = True
            break
        state_in = model.detach_state(s.hidden) if s.hidden is not None else None  # cut the graph here
        loss, s.hidden = lm_step(s.wrapped or model, x, y, state_in, s.optimizer, s.rt, cfg.clip)
        if s.scheduler is not None:
            s.scheduler.step()
        if s.average is not None:
            s.average.update_parameters(model)
        s.hidden = model.detach_state(s.hidden)
        state.global_step += 1
        state.step_in_epoch += 1
        tokens += y.numel()
        pending.append(loss.detach())
        loss_sum += loss.detach() * y.numel()
        bar.update(1)
        if state.global_step % cfg.log_every == 0:
            latest = check_finite(pending, state.global_step - len(pending) + 1)
            s.writer.add_scalar("train/loss", latest, state.global_step)
            s.writer.add_scalar("lr", s.optimizer.param_groups[0]["lr"], state.global_step)
            bar.set_postfix(loss=f"{latest:.3f}", refresh=False)
    bar.close()
    if pending:
        check_finite(pending, state.global_step - len(pending) + 1)
    seen = torch.tensor(tokens, device=s.rt.device)
    distributed.all_sum(loss_sum, seen)  # over all processes' streams
    tokens = int(seen)
    return {"loss": loss_sum.item() / max(tokens, 1), "tokens": tokens, "stopped": stopped}


def end_epoch(s: Session, metrics: dict, seconds: float, complete: bool) -> bool:
    """Validate, log, keep best.pt (by val perplexity) and last.pt; True when early stopping says stop."""
    cfg, state = s.cfg, s.state
    val = evaluate_lm(s.scored, s.data.val, cfg.bptt, s.rt)
    s.writer.add_scalar("val/loss", val["loss"], state.global_step)
    s.writer.add_scalar("val/ppl", val["ppl"], state.global_step)
    record = {"epoch": state.epoch + 1, "step": state.global_step, "train_loss": metrics["loss"],
              "val_loss": val["loss"], "val_ppl": val["ppl"], "train_seconds": round(state.train_seconds, 3),
              "tokens_per_second": metrics["tokens"] / max(seconds, 1e-9)}
    state.history.append(record)
    if complete:
        state.epoch += 1
        state.step_in_epoch = 0
        s.hidden = None  # each epoch starts from a zero state at a new offset
    improved = val["ppl"] < state.best_ppl
    state.bad_epochs = 0 if improved else state.bad_epochs + 1
    if improved:
        state.best_ppl, state.best_epoch = val["ppl"], record["epoch"]
        s.save("best.pt")
    s.save("last.pt")
    write_summary(s, "running", {})  # `torchlab runs` sees the epochs so far
    say(f"epoch {record['epoch']}/{cfg.epochs}  train loss {metrics['loss']:.4f}  val loss {val['loss']:.4f} "
        f"ppl {val['ppl']:.3f}" + (" *" if improved else "") + f"  {record['tokens_per_second']:.0f} tok/s")
    return bool(cfg.patience and state.bad_epochs >= cfg.patience)


def fit(s: Session, stop: StopFlag) -> str:
    """Run epochs until done, early-stopped, max-steps or Ctrl-C; returns how it ended."""
    cfg, state = s.cfg, s.state
    while state.epoch < cfg.epochs:
        tic = time.perf_counter()
        try:
            metrics = train_steps(s, stop)
        except NonFiniteLoss as e:
            raise non_finite_error(s, e, write_summary, "lower --lr, or clip gradients with --clip") from None
        seconds = time.perf_counter() - tic
        state.train_seconds += seconds
        state.tokens_seen += metrics["tokens"]
        if stop.requested:
            path = s.save("last.pt")
            raise Interrupted(f"interrupted at step {state.global_step}; resumable checkpoint {path}; "
                              f"continue with: torchlab train --resume {s.run_dir}")
        if metrics["stopped"]:
            if metrics["tokens"]:
                end_epoch(s, metrics, seconds, complete=False)
            return "max-steps"
        if end_epoch(s, metrics, seconds, complete=True):
            say(f"early stop: no val improvement for {cfg.patience} epochs (best epoch {state.best_epoch})")
            return "early-stopped"
    return "finished"


def write_summary(s: Session, status: str, extra: dict) -> dict:
    st = s.state
    summary = {"status": status, "run_dir": str(s.run_dir), "task": "lm", "corpus": s.cfg.corpus,
               "level": s.cfg.level, "cell": s.cfg.cell, "impl": s.cfg.impl, "device": str(s.rt.device),
               "vocab_size": len(s.data.vocab), "tokens": s.data.counts, "epochs": st.epoch, "epochs_planned": s.cfg.epochs,
               "steps": st.global_step,
               "best_val_ppl": st.best_ppl if st.best_epoch else None, "best_epoch": st.best_epoch or None,
               "train_seconds": round(st.train_seconds, 2),
               "tokens_per_second": round(st.tokens_seen / max(st.train_seconds, 1e-9), 1), **extra,
               "history": st.history}
    summary["processes"] = distributed.WORLD.size
    if distributed.WORLD.main:
        summary = runinfo.write(s.run_dir, summary)
    return summary


def finish(s: Session, status: str) -> dict:
    """Score the test split with the best weights (by val perplexity)."""
    scored = "last weights"
    best = s.run_dir / "best.pt"
    distributed.barrier()  # rank 0 has finished writing best.pt
    if best.exists():
        s.model.load_state_dict(ckpt_io.load(best)["model_state"])
        scored = f"best epoch {s.state.best_epoch}"
    test = evaluate_lm(s.model, s.data.test, s.cfg.bptt, s.rt)
    s.writer.add_scalar("test/ppl", test["ppl"], s.state.global_step)
    hparams = {k: v for k, v in dataclasses.asdict(s.cfg).items() if isinstance(v, (int, float, str, bool))}
    s.writer.add_hparams(hparams, {"hparam/test_ppl": test["ppl"]}, run_name=".")
    return write_summary(s, status, {"test_ppl": test["ppl"], "test_loss": test["loss"],
                                     "test_tokens": test["tokens"], "test_scored": scored})


def build_model(cfg: LMTrainConfig, vocab_size: int) -> LanguageModel:
    mcfg = LMConfig(vocab_size, cfg.cell, cfg.impl, cfg.embed_size, cfg.hidden_size, cfg.layers, cfg.dropout,
                    cfg.embed_dropout, cfg.tie, cfg.weight_drop)
    try:
        return LanguageModel(mcfg)
    except ValueError as e:
        raise UserError(f"--tie: {e}", "set --embed-size equal to --hidden-size, or drop --tie") from None


def start(cfg: LMTrainConfig, resume: dict | None, run_dir: Path | None) -> Session:
    device = runtime.pick_device(cfg.device)
    if cfg.tie and cfg.embed_size != cfg.hidden_size:
        build_model(cfg, 2)  # raises the --tie error before any data is read
    # The vocabulary is part of the model: a resumed run keeps its saved one.
    data = prepare_text(cfg, device, Vocab.from_dict(resume["vocab"]) if resume is not None else None)
    steps = cfg.epochs * len(window_starts(data.train.shape[1], cfg.bptt))
    rt, notes = runtime.choose(device, runtime.Requested.of(cfg),
                               workload(cfg, len(data.vocab), min(steps, cfg.max_steps or steps)))
    cfg = dataclasses.replace(cfg, **{k: v for k, v in rt.settings().items() if k in ("precision", "threads")})
    torch.manual_seed(cfg.seed)  # initial weights
    model = build_model(cfg, len(data.vocab)).to(device)
    notes += bf16_fallback(model, rt)
    distributed.spread_seeds()  # the same initial weights everywhere, then each process its own dropout
    optimizer, scheduler = build_optimizer(cfg, model, steps)
    state, hidden = LMState(), None
    average = weight_average(model, cfg.ema) if cfg.ema else None
    if resume is not None:
        ckpt_io.restore_training(resume, model, average, optimizer, scheduler)
        state = LMState(**resume["state"])
        rows = distributed.WORLD.slice_of_batch(cfg.batch_size)
        saved = [h[:, rows].to(device) for h in resume["hidden"]]  # [L, B, H]: this process's streams
        hidden = (tuple(saved) if len(saved) == 2 else saved[0]) if saved and state.step_in_epoch else None
    else:
        run_dir = create_run_dir(cfg, f"lm-{Path(cfg.corpus).stem}-{cfg.cell}")
    writer = open_writer(run_dir) if distributed.WORLD.main else Nothing()
    say(f"data: {cfg.corpus} ({cfg.level} level) from {data.source}: {data.counts['train']} train, "
        f"{data.counts['val']} val, {data.counts['test']} test tokens; vocabulary {len(data.vocab)}")
    for note in notes:
        say(note)
    say(f"{rt.describe()}  model: {cfg.layers}-layer {cfg.cell} ({cfg.impl}), hidden {cfg.hidden_size}  run: {run_dir}")
    if distributed.WORLD.enabled:
        say(distributed.describe(cfg.batch_size, "text streams"))
    wrapped = distributed.wrap(model, device)
    return Session(cfg, data, model, optimizer, scheduler, rt, state, run_dir, writer, hidden, average,
                   None if wrapped is model else wrapped)


def workload(cfg: LMTrainConfig, vocab_size: int, steps: int) -> runtime.Workload:
    """This run's training step for runtime.choose to time: its model and optimizer on random windows."""
    per = cfg.batch_size // distributed.WORLD.size  # each process's streams

    def build(rt: Runtime):
        model = build_model(cfg, vocab_size).to(rt.device)
        optimizer, _ = build_optimizer(cfg, model, 1)
        x = torch.randint(vocab_size, (per, cfg.bptt + 1), device=rt.device)  # [B, T + 1] token ids

        def run(n: int) -> None:
            state = None
            for _ in range(n):
                loss, state = lm_step(model, x[:, :-1], x[:, 1:], state, optimizer, rt, cfg.clip)
                state = model.detach_state(state)
            loss.item()  # waits for the device

        return run

    name = f"lm {cfg.layers}x{cfg.cell} ({cfg.impl}) {cfg.embed_size}/{cfg.hidden_size}, vocabulary {vocab_size}, " \
           f"batch {per}x{cfg.bptt}, {cfg.optimizer}"
    return runtime.Workload(name, build, per * cfg.bptt, steps, convolutional=False, compilable=False)


def bf16_fallback(model: LanguageModel, rt: Runtime) -> list[str]:
    """Run the recurrent layers in fp32 where this machine has no bf16 kernel for them (oneDNN's fused
    LSTM needs AVX-512 for bf16); the embedding and the decoder stay in bf16. Returns the warning, if any."""
    if not rt.bf16 or runtime.runs_in_bf16(model.rnn, rt):
        return []
    model.fp32_recurrence = True
    return [f"warning: --precision bf16: this {rt.device.type} has no bf16 kernel for {type(model.rnn).__name__}; "
            "its layers run in fp32, the embedding and the output layer in bf16"]


def train(cfg: LMTrainConfig, resume: dict | None = None, run_dir: Path | None = None,
          stop: StopFlag | None = None) -> dict:
    """Train (or resume) one language model and return its summary dict."""
    s = start(cfg, resume, run_dir)
    write_summary(s, "running", {})  # `torchlab runs` sees it from the start
    with s.rt.threads_set():
        return supervise(s, fit, finish, write_summary, stop or StopFlag())
