"""Language models: `torchlab train lm --corpus timemachine|tang|PATH`.

The text is tokenised, split into contiguous train / val / test streams (the
last 5% is test, the 5% before it val) and numbered with a vocabulary built
from the training split alone. Training cuts the B parallel training streams
into windows of `bptt` tokens (truncated back-propagation through time): the
hidden state flows from one window to the next, but its history is cut
(`detach_state`) so each backward pass stays `bptt` steps long. Evaluation
scores every target token of a split exactly once; perplexity = exp(mean loss).
A --max-steps run (a dry run) scores only the first EVAL_SAMPLE_WINDOWS windows
of each evaluation stream, and says so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from torchlab import distributed, runinfo, runtime
from torchlab.config import LMTrainConfig
from torchlab.data.corpora import split_corpus
from torchlab.data.text import Vocab, batchify, batchify_eval, leading_windows, window_starts, windows
from torchlab.engine import evaluate_lm, language_model_loss, train_step
from torchlab.errors import UserError
from torchlab.i18n import N_, _, speaking
from torchlab.logger import say
from torchlab.models.rnn import LanguageModel, LMConfig
from torchlab.optim import build_optimizer
from torchlab.runtime import Runtime

# A --max-steps run scores this many windows per evaluation stream: with the defaults (16 streams of 64
# tokens) 20,480 tokens, a few seconds, where tang's whole val and test splits take minutes.
EVAL_SAMPLE_WINDOWS = 20


@dataclass
class TextData:
    vocab: Vocab
    train: torch.Tensor  # [B, L] token ids: B contiguous slices of the training text, on the device
    val: list  # blocks of streams from batchify_eval, on the device
    test: list
    counts: dict  # tokens per split
    source: str
    scored: dict | None = None  # tokens each evaluation scores, when a --max-steps run scores a sample

    @property
    def sampled(self) -> bool:
        return self.scored is not None

    def sample_note(self, split: str = "") -> str:
        """"a sample of 1,000 of 10,000 test tokens" (one split), or of every evaluation split."""
        return runinfo.sample_note(self.scored, self.counts, "tokens", (split,) if split else ("val", "test"))


def eval_blocks(ids: torch.Tensor, cfg: LMTrainConfig, device: torch.device) -> tuple[list, int]:
    """A split as evaluation blocks, each process's share of the streams of each on the device, and the
    targets they score together; a --max-steps run keeps the leading EVAL_SAMPLE_WINDOWS windows."""
    blocks = batchify_eval(ids, cfg.eval_batch_size)
    if cfg.max_steps:
        blocks = leading_windows(blocks, cfg.bptt, EVAL_SAMPLE_WINDOWS)
    part = distributed.WORLD.part
    shares = [b[part(len(b))].to(device) for b in blocks if len(b[part(len(b))])]
    return shares, sum(b.shape[0] * (b.shape[1] - 1) for b in blocks)


def prepare_text(cfg: LMTrainConfig, device: torch.device, vocab: Vocab | None = None) -> TextData:
    """Read, split and number the corpus; a resumed run passes its saved `vocab` so ids keep their meaning."""
    corpus, splits = split_corpus(cfg.corpus, cfg.data_dir, cfg.script, cfg.encoding, cfg.level, cfg.seed)
    if vocab is None:
        vocab = Vocab.build(splits.train, cfg.level)  # never sees val or test: their new tokens become <unk>
    elif set(splits.train) - set(vocab.tokens):
        say(_("warning: {corpus} changed since the run started: {count} training token types are not in the saved "
              "vocabulary and are read as <unk>").format(corpus=cfg.corpus, count=len(set(splits.train) - set(vocab.tokens))))
    world = distributed.WORLD
    train = batchify(vocab.encode(splits.train), cfg.batch_size)[world.slice_of_batch(cfg.batch_size)].to(device)
    if train.shape[1] - 1 < cfg.bptt:
        raise UserError(_("--bptt {bptt}: the training streams hold only {length} tokens each ({tokens} tokens / batch size "
                          "{batch}); a window needs bptt + 1")
                        .format(bptt=cfg.bptt, length=train.shape[1], tokens=len(splits.train), batch=cfg.batch_size),
                        _("use a smaller --bptt or --batch-size, or a longer text"))
    (val, val_targets), (test, test_targets) = (eval_blocks(vocab.encode(part), cfg, device)
                                                for part in (splits.val, splits.test))
    counts = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}
    whole = val_targets == len(splits.val) - 1 and test_targets == len(splits.test) - 1
    scored = None if whole else {"val": val_targets, "test": test_targets}
    return TextData(vocab, train, val, test, counts, corpus.source, scored)


def epoch_offset(seed: int, epoch: int, bptt: int) -> int:
    """Where this epoch's first window starts: moves the window edges each epoch, repeatably."""
    return int(torch.randint(bptt, (1,), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)))


class LanguageModelTask:
    """How the trainer trains a language model (see trainer.py for what each member means)."""

    unit, score, higher_is_better = "tokens", "val_ppl", False
    nan_hint = N_("lower --lr, or clip gradients with --clip")
    last_weights = N_("last weights")

    def model_name(self, cfg: LMTrainConfig) -> str:
        return f"lm-{cfg.cell}"

    def run_name(self, cfg: LMTrainConfig) -> str:
        return f"lm-{Path(cfg.corpus).stem}-{cfg.cell}"

    def prepare(self, cfg: LMTrainConfig, device: torch.device, resume: dict | None) -> TextData:
        if cfg.tie and cfg.embed_size != cfg.hidden_size:
            build_model(cfg, 2)  # raises the --tie error before any data is read
        # The vocabulary is part of the model: a resumed run keeps its saved one.
        return prepare_text(cfg, device, Vocab.from_dict(resume["vocab"]) if resume is not None else None)

    def total_steps(self, cfg: LMTrainConfig, data: TextData) -> int:
        return cfg.epochs * len(window_starts(data.train.shape[1], cfg.bptt))

    def steps_in_epoch(self, cfg: LMTrainConfig, data: TextData, epoch: int) -> int:
        return len(window_starts(data.train.shape[1], cfg.bptt, epoch_offset(cfg.seed, epoch, cfg.bptt)))

    def samples_per_step(self, cfg: LMTrainConfig) -> int:
        return cfg.batch_size * cfg.bptt

    def batches(self, cfg: LMTrainConfig, data: TextData, epoch: int, start: int):
        return itertools.islice(windows(data.train, cfg.bptt, epoch_offset(cfg.seed, epoch, cfg.bptt)), start, None)

    def workload(self, cfg: LMTrainConfig, data: TextData, steps: int) -> runtime.Workload:
        return workload(cfg, len(data.vocab), steps)

    def settings(self, rt: Runtime) -> dict:
        return {k: v for k, v in rt.settings().items() if k in ("precision", "threads")}

    def build(self, cfg: LMTrainConfig, data: TextData, rt: Runtime):
        model = build_model(cfg, len(data.vocab))
        return model, bf16_fallback(model, rt)

    def loss_fn(self, cfg: LMTrainConfig):
        return language_model_loss(LanguageModel.detach_state)

    def restore_carry(self, ckpt: dict, state, device: torch.device):
        """The hidden state a mid-epoch checkpoint saved: this process's streams of it."""
        rows = distributed.WORLD.slice_of_batch(ckpt["train_config"]["batch_size"])
        saved = [h[:, rows].to(device) for h in ckpt["hidden"]]  # [L, B, H]
        return (tuple(saved) if len(saved) == 2 else saved[0]) if saved and state.step_in_epoch else None

    def samples(self, data: TextData) -> None:
        return None

    def train_metrics(self, metrics: dict) -> dict:
        return {}

    def validate(self, s) -> dict:
        val = evaluate_lm(s.scored, s.data.val, s.cfg.bptt, s.rt)
        return {"val_loss": val["loss"], "val_ppl": val["ppl"]}

    def test(self, s, scored: str) -> tuple[dict, dict]:
        test = evaluate_lm(s.model, s.data.test, s.cfg.bptt, s.rt)
        s.writer.add_scalar("test/ppl", test["ppl"], s.state.global_step)
        with speaking("en"):  # summary.json stays English; the terminal shows runinfo.scored_text
            scored += f"; {s.data.sample_note('test')}, --max-steps run" if s.data.sampled else ""
        summary = {"test_ppl": test["ppl"], "test_loss": test["loss"], "test_tokens": test["tokens"],
                   "test_scored": scored}
        return summary, {"hparam/test_ppl": test["ppl"]}

    def checkpoint_extra(self, s) -> dict:
        """The vocabulary, and the hidden state of every stream, so a mid-epoch resume continues from it."""
        hidden = s.carry if isinstance(s.carry, tuple) else (s.carry,) if s.carry is not None else ()
        hidden = [distributed.gather_rows(h.detach(), dim=1) for h in hidden]  # [L, B/N, H] -> [L, B, H]
        return {"vocab": s.data.vocab.to_dict(), "hidden": [h.cpu() for h in hidden]}

    def summary_extra(self, s) -> dict:
        cfg = s.cfg
        sample = {"eval_sample": {"unit": "tokens", **s.data.scored}} if s.data.sampled else {}
        return {"corpus": cfg.corpus, "level": cfg.level, "cell": cfg.cell, "impl": cfg.impl,
                "vocab_size": len(s.data.vocab), "tokens": s.data.counts, **sample}

    def describe(self, s, notes: list[str]) -> list[str]:
        cfg, data = s.cfg, s.data
        lines = [_("data: {corpus} ({level} level) from {source}: {train} train, {val} val, {test} test tokens; "
                   "vocabulary {vocab}").format(corpus=cfg.corpus, level=cfg.level, source=data.source,
                                               vocab=len(data.vocab), **data.counts), *notes,
                 s.rt.describe() + "  " + _("model: {layers}-layer {cell} ({impl}), hidden {hidden}  run: {run_dir}")
                 .format(layers=cfg.layers, cell=cfg.cell, impl=cfg.impl, hidden=cfg.hidden_size, run_dir=s.run_dir)]
        if data.sampled:  # a dry run's numbers must not pass for the whole splits'
            lines.append(_("--max-steps run: validation and test score {sample} (the first {windows} windows of each "
                           "evaluation stream), not the whole splits").format(sample=data.sample_note(),
                                                                              windows=EVAL_SAMPLE_WINDOWS))
        return lines + ([distributed.describe(cfg.batch_size, "text streams")] if s.ctx.world.enabled else [])

    def epoch_line(self, r: dict, epochs: int, improved: bool) -> str:
        partial = _(" (partial)") if r.get("partial") else ""
        return (_("epoch {epoch}/{epochs}").format(epoch=r["epoch"], epochs=epochs) + partial + "  "
                + _("train loss {loss}  val loss {val_loss} ppl {ppl}").format(
                    loss=f"{r['train_loss']:.4f}", val_loss=f"{r['val_loss']:.4f}", ppl=f"{r['val_ppl']:.3f}")
                + (" *" if improved else "") + "  " + _("{rate} tok/s").format(rate=f"{r['tokens_per_second']:.0f}"))


TASK = LanguageModelTask()


def build_model(cfg: LMTrainConfig, vocab_size: int) -> LanguageModel:
    mcfg = LMConfig(vocab_size, cfg.cell, cfg.impl, cfg.embed_size, cfg.hidden_size, cfg.layers, cfg.dropout,
                    cfg.embed_dropout, cfg.tie, cfg.weight_drop)
    try:
        return LanguageModel(mcfg)
    except ValueError as e:
        raise UserError(_("--tie: {error}").format(error=e), _("set --embed-size equal to --hidden-size, or drop --tie")) from None


def workload(cfg: LMTrainConfig, vocab_size: int, steps: int) -> runtime.Workload:
    """This run's training step for runtime.choose to time: its model and optimizer on random windows."""
    per = cfg.batch_size // distributed.WORLD.size  # each process's streams

    def build(rt: Runtime):
        model = build_model(cfg, vocab_size).to(rt.device)
        optimizer, _ = build_optimizer(cfg, model, 1)
        loss_fn = language_model_loss(LanguageModel.detach_state)
        x = torch.randint(vocab_size, (per, cfg.bptt + 1), device=rt.device)  # [B, T + 1] token ids

        def run(n: int) -> None:
            state = None
            for _ in range(n):
                loss, _, _, state = train_step(model, (x[:, :-1], x[:, 1:]), loss_fn, state, optimizer, rt, cfg.clip)
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
