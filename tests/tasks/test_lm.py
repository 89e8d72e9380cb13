"""`torchlab train lm` end to end on tiny corpora written in tmp_path: runs, perplexity, TBPTT, resume, errors."""

from __future__ import annotations

import json
import math
import random
import re
import signal
import tomllib

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import SHARED_DATA, assert_same_weights, error_line, weights
from torchlab import runtime, trainer
from torchlab.cli import main
from torchlab.config import LMTrainConfig
from torchlab.data import corpora
from torchlab.data.text import Vocab, split_documents, tokenize
from torchlab.engine import StopFlag, evaluate_lm
from torchlab.models.rnn import LanguageModel, LMConfig
from torchlab.runtime import Runtime
from torchlab.tasks import lm

# Flags for fast language-model runs: ~30 windows of 4 x 8 tokens per epoch on the English text below.
TINY_LM = ["--device", "cpu", "--precision", "fp32", "--embed-size", "16", "--hidden-size", "32", "--layers", "1", "--bptt", "8",
           "--batch-size", "4", "--eval-batch-size", "3", "--log-every", "2"]
SENTENCES = ("The lamp was bright. ", "We sat and listened. ", "He smiled at us. ", "Nobody believed him.\n",
             "The time traveller spoke. ")
TIMING = ("train_seconds", "tokens_per_second")  # history fields that measure the machine, not the run
POEM_LINES = ("床前明月光，疑是地上霜。\n", "举头望明月，低头思故乡。\n",
              "白日依山尽，黄河入海流。\n")

pytestmark = pytest.mark.usefixtures("one_thread")


def english_text(sentences: int = 60, seed: int = 0) -> str:
    """Sentences in a seeded random order: predictable inside a sentence, uncertain between them."""
    rng = random.Random(seed)
    return "".join(rng.choice(SENTENCES) for _ in range(sentences))


@pytest.fixture
def en_corpus(tmp_path):
    path = tmp_path / "en.txt"
    path.write_text(english_text())  # ~1.3 KB
    return path


def train_args(corpus, *extra) -> list[str]:
    return ["train", "lm", "--corpus", str(corpus), *TINY_LM, *extra]






def history(run_dir):
    """The per-epoch records of a run, without the timing fields."""
    records = json.loads((run_dir / "summary.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]




# --- a whole run ------------------------------------------------------------------------------


def test_train_lm_writes_a_complete_run(en_corpus, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code = main(train_args(en_corpus, "--epochs", "2", "--run-dir", "r", "--json"))
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    run = tmp_path / "r"
    assert summary == json.loads((run / "summary.json").read_text())
    assert {"best.pt", "last.pt", "summary.json", "config.toml"} <= {p.name for p in run.iterdir()}
    assert summary["status"] == "finished" and summary["task"] == "lm" and summary["epochs"] == 2
    counts, text = summary["tokens"], en_corpus.read_text()
    assert counts["train"] + counts["val"] + counts["test"] == len(text)  # char level: every character once
    assert summary["test_tokens"] == counts["test"] - 1  # every target of the test split, each once
    assert summary["vocab_size"] == len(set(text[: counts["train"]])) + 1  # the training characters and <unk>
    assert summary["test_ppl"] == pytest.approx(math.exp(summary["test_loss"]))
    val_ppls = [h["val_ppl"] for h in summary["history"]]
    assert len(val_ppls) == 2 and summary["best_val_ppl"] == min(val_ppls)
    assert summary["best_epoch"] == 1 + val_ppls.index(min(val_ppls))
    assert summary["test_scored"] == f"best epoch {summary['best_epoch']}"
    assert summary["steps"] == summary["history"][-1]["step"]
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["task"] == "lm" and saved["corpus"] == str(en_corpus) and saved["hidden_size"] == 32

    events = EventAccumulator(str(run)).Reload()
    assert {"train/loss", "lr", "val/loss", "val/ppl", "test/ppl"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/ppl")] == [h["step"] for h in summary["history"]]
    assert [e.step for e in events.Scalars("train/loss")][:3] == [2, 4, 6]
    assert events.Scalars("test/ppl")[0].value == pytest.approx(summary["test_ppl"], rel=1e-6)


@pytest.mark.parametrize("impl", ["torch", "scratch"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_cell_and_impl_trains(en_corpus, tmp_path, capsys, cell, impl):
    code = main(train_args(en_corpus, "--cell", cell, "--impl", impl, "--layers", "2", "--max-steps", "3",
                           "--run-dir", "r"))
    out = capsys.readouterr().out
    assert code == 0
    assert "test perplexity" in out and "torchlab generate r/best.pt" in out  # the text summary
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["status"], summary["steps"], summary["cell"], summary["impl"]) == ("max-steps", 3, cell, impl)
    assert math.isfinite(summary["test_ppl"]) and 1 < summary["test_ppl"] < 2 * summary["vocab_size"]
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["model_name"] == f"lm-{cell}" and ckpt["model_config"]["impl"] == impl


@pytest.mark.parametrize("level", ["char", "word"])
def test_chinese_text_trains_on_characters_at_either_level(tmp_path, capsys, level):
    corpus = tmp_path / "poems.txt"
    corpus.write_text("".join(random.Random(0).choice(POEM_LINES) for _ in range(60)))
    code = main(train_args(corpus, "--level", level, "--max-steps", "2", "--run-dir", "r", "--json"))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["level"] == level
    assert sum(summary["tokens"].values()) == len(corpus.read_text())  # Han characters are tokens at word level too
    tokens = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["vocab"]["tokens"]
    assert "明" in tokens and all(len(t) == 1 for t in tokens[1:])


@pytest.mark.parametrize("cell, impl", [
    ("lstm", "torch"), ("lstm", "scratch"), ("gru", "torch"), ("rnn", "scratch"), ("gru", "scratch"),
])
def test_bf16_autocast_trains(en_corpus, tmp_path, capsys, cell, impl):
    """bf16 trains on every CPU: where a fused layer has no bf16 kernel (oneDNN's LSTM without AVX-512), the
    recurrent layers fall back to fp32 with a one-line warning instead of a traceback."""
    args = ["--cell", cell, "--impl", impl, "--layers", "2", "--precision", "bf16", "--max-steps", "2"]
    assert main(train_args(en_corpus, *args, "--run-dir", "r")) == 0
    assert math.isfinite(json.loads((tmp_path / "r" / "summary.json").read_text())["test_ppl"])
    layer = LanguageModel(LMConfig(10, cell, impl, 8, 8, 2)).rnn
    native = runtime.runs_in_bf16(layer, Runtime(torch.device("cpu"), bf16=True))
    warned = "has no bf16 kernel" in capsys.readouterr().err
    assert warned == (not native)
    assert native or (cell, impl) == ("lstm", "torch")  # only the fused LSTM lacks a bf16 kernel anywhere seen


def test_a_layer_without_bf16_kernels_runs_in_fp32_with_a_warning(en_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime, "runs_in_bf16", lambda layer, rt: False)  # as on an AVX2 CPU
    assert main(train_args(en_corpus, "--precision", "bf16", "--max-steps", "2", "--run-dir", "r")) == 0
    out = capsys.readouterr().err
    assert "warning: --precision bf16: this cpu has no bf16 kernel for LSTM; its layers run in fp32, the " \
           "embedding and the output layer in bf16" in out
    assert tomllib.loads((tmp_path / "r" / "config.toml").read_text())["precision"] == "bf16"


def test_native_bf16_runs_the_fused_lstm_without_fallback(native_bf16):
    layer = torch.nn.LSTM(16, 32, 2, batch_first=True)
    assert runtime.runs_in_bf16(layer, Runtime(torch.device("cpu"), bf16=True))


def test_a_tiny_model_overfits_a_periodic_text(tmp_path, capsys):
    corpus = tmp_path / "periodic.txt"
    corpus.write_text("hello world. " * 240)  # every character is certain given the two before it
    code = main(train_args(corpus, "--epochs", "3", "--dropout", "0", "--embed-dropout", "0", "--lr", "1e-2",
                           "--weight-decay", "0", "--run-dir", "r", "--json"))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["vocab_size"] == 10  # "helo wrd." and <unk>
    val_ppls = [h["val_ppl"] for h in summary["history"]]
    assert val_ppls[0] > val_ppls[-1]
    assert summary["best_val_ppl"] < 1.3 and summary["test_ppl"] < 1.3  # a uniform guess would be 10


# --- evaluation -------------------------------------------------------------------------------


def eval_setup(corpus, cell: str, eval_batch_size: int, bptt: int):
    cfg = LMTrainConfig(corpus=str(corpus), device="cpu", batch_size=4, eval_batch_size=eval_batch_size, bptt=bptt,
                        cell=cell, embed_size=16, hidden_size=32, layers=2, dropout=0.5)
    data = lm.prepare_text(cfg, torch.device("cpu"))
    torch.manual_seed(1)
    return data, lm.build_model(cfg, len(data.vocab))


def direct_loss(model, ids: torch.Tensor) -> float:
    """Summed loss of ids[1:] given ids[:-1], the whole sequence in one forward pass from a zero state."""
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0))  # [1, N - 1, V]
    return F.cross_entropy(logits[0].double(), ids[1:], reduction="sum").item()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_one_eval_stream_equals_the_split_run_as_one_sequence(en_corpus, cell):
    # With one stream, evaluate_lm's windows carry the state across, so the result is the split as one sequence.
    data, model = eval_setup(en_corpus, cell, eval_batch_size=1, bptt=5)
    result = evaluate_lm(model, data.test, 5, Runtime(torch.device("cpu")))
    assert not model.training  # evaluation switches dropout off
    assert len(data.test) == 1 and data.test[0].shape[0] == 1
    ids = data.test[0][0]
    tokens = tokenize(en_corpus.read_text(), "char")
    test_tokens = split_documents([tokens], corpora.VAL_FRACTION, corpora.TEST_FRACTION, shuffle=False).test
    assert torch.equal(ids, data.vocab.encode(test_tokens))  # the block is the whole test split
    assert result["tokens"] == len(test_tokens) - 1 == data.counts["test"] - 1
    assert result["loss"] == pytest.approx(direct_loss(model, ids) / result["tokens"], rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))


@pytest.mark.parametrize("eval_batch_size, bptt", [(3, 5), (4, 8), (7, 100)])
def test_eval_streams_score_every_target_once_with_their_own_state(en_corpus, eval_batch_size, bptt):
    # Several streams each start from a zero state mid-text, so the exact oracle is each stream run on its own,
    # in one piece; and the streams' targets, in order, must be the split's targets, each once.
    data, model = eval_setup(en_corpus, "lstm", eval_batch_size, bptt)
    model.eval()
    for blocks, name in ((data.val, "val"), (data.test, "test")):
        assert len(blocks) == (2 if (data.counts[name] - 1) % eval_batch_size else 1)  # a tail block when uneven
        result = evaluate_lm(model, blocks, bptt, Runtime(torch.device("cpu")))
        streams = [row for block in blocks for row in block]
        targets = torch.cat([row[1:] for row in streams])
        split = torch.cat([streams[0][:1], targets])
        assert len(split) == data.counts[name] and result["tokens"] == len(targets) == data.counts[name] - 1
        expected = sum(direct_loss(model, row) for row in streams) / len(targets)
        assert result["loss"] == pytest.approx(expected, rel=1e-5)
        assert result["ppl"] == pytest.approx(math.exp(expected), rel=1e-5)


# --- truncated back-propagation through time --------------------------------------------------


def record_forward(model, calls: list):
    """Wrap model.forward to record (training?, incoming state, outgoing state) of every call."""
    forward = model.forward

    def spy(tokens, state=None):
        logits, new = forward(tokens, state)
        calls.append((model.training, state, new))
        return logits, new

    model.forward = spy


def parts(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell, impl", [("lstm", "torch"), ("gru", "scratch")])
def test_hidden_state_is_carried_but_detached_between_windows(en_corpus, cell, impl):
    cfg = LMTrainConfig(corpus=str(en_corpus), device="cpu", batch_size=4, bptt=8, cell=cell, impl=impl,
                        embed_size=16, hidden_size=32, layers=2, max_steps=5, run_dir="r")
    s = trainer.start(lm.TASK, cfg, trainer.Context())
    calls = []
    record_forward(s.model, calls)
    try:
        trainer.run_epoch(s, StopFlag())
    finally:
        s.writer.close()
    assert s.state.global_step == 5 and len(calls) == 5 and all(training for training, _, _ in calls)
    assert calls[0][1] is None  # the epoch starts from a zero state
    for (_, _, out), (_, state_in, _) in zip(calls, calls[1:]):
        assert all(p.grad_fn is not None for p in parts(out))  # the forward pass built a graph...
        for previous, incoming in zip(parts(out), parts(state_in), strict=True):
            assert incoming.grad_fn is None and not incoming.requires_grad  # ...cut before the next window
            assert torch.equal(incoming, previous)  # with the values carried over
    assert all(p.grad_fn is None and not p.requires_grad for p in parts(s.carry))


def test_each_epoch_starts_from_a_zero_state(en_corpus):
    cfg = LMTrainConfig(corpus=str(en_corpus), device="cpu", batch_size=4, bptt=8, embed_size=16, hidden_size=32,
                        layers=1, epochs=2, run_dir="r")
    s = trainer.start(lm.TASK, cfg, trainer.Context())
    calls = []
    record_forward(s.model, calls)
    try:
        assert trainer.fit(s, StopFlag()) == "finished"
    finally:
        s.writer.close()
    fresh = [i for i, (training, state, _) in enumerate(calls) if training and state is None]
    epoch_steps = [h["step"] for h in s.state.history]
    train_calls = [i for i, (training, _, _) in enumerate(calls) if training]
    assert fresh == [train_calls[0], train_calls[epoch_steps[0]]]  # the first window of each epoch


# --- exact resume -----------------------------------------------------------------------------


def interrupt_after(monkeypatch, windows: int):
    """Send a real SIGINT after `windows` training windows (the handler lets the step finish)."""
    original = lm.windows
    count = {"n": 0}

    def spy(streams, bptt, offset=None):
        if offset is None:  # evaluation
            yield from original(streams, bptt)
            return
        for item in original(streams, bptt, offset):
            count["n"] += 1
            if count["n"] == windows + 1:
                signal.raise_signal(signal.SIGINT)
            yield item

    monkeypatch.setattr(lm, "windows", spy)


def drop_interrupted_train_loss(records: list, stop_at: int) -> list:
    out, start = [], 0
    for r in records:
        inside = start < stop_at < r["step"]  # interrupted part-way through this epoch
        out.append({k: v for k, v in r.items() if not (inside and k == "train_loss")})
        start = r["step"]
    return out


@pytest.mark.parametrize("extra, stop_at", [
    ([], 5),  # mid-epoch: the carried hidden state is saved and restored
    ([], "epoch end"),  # exactly at an epoch boundary
    (["--cell", "gru", "--impl", "scratch", "--layers", "2", "--schedule", "onecycle"], 40),  # mid second epoch
    (["--ema", "0.9"], 5),  # the weight average and its update count resume too
])
def test_interrupted_and_resumed_equals_uninterrupted(en_corpus, tmp_path, monkeypatch, capsys, extra, stop_at):
    args = train_args(en_corpus, "--epochs", "2", *extra)  # default dropout: the random state must resume too
    assert main([*args, "--run-dir", "straight"]) == 0
    if stop_at == "epoch end":
        stop_at = history(tmp_path / "straight")[0]["step"]
    with monkeypatch.context() as m:
        interrupt_after(m, stop_at)
        assert main([*args, "--run-dir", "broken"]) == 130
    assert "torchlab train --resume broken" in capsys.readouterr().err
    state = torch.load(tmp_path / "broken" / "last.pt", weights_only=True)["state"]
    assert state["global_step"] == stop_at
    assert json.loads((tmp_path / "broken" / "summary.json").read_text())["status"] == "interrupted"
    assert main(["train", "--resume", "broken"]) == 0
    for name in ("last.pt", "best.pt"):
        assert_same_weights(weights(tmp_path / "straight" / name), weights(tmp_path / "broken" / name))
        if "--ema" in extra:
            straight, broken = (torch.load(tmp_path / d / name, weights_only=True) for d in ("straight", "broken"))
            assert_same_weights(straight["train_model_state"], broken["train_model_state"])
    # Identical history, but for the train loss of an interrupted epoch: the resumed run averages it over the
    # windows after the resume only (as image classification does), so there it is left out.
    assert drop_interrupted_train_loss(history(tmp_path / "broken"), stop_at) == \
        drop_interrupted_train_loss(history(tmp_path / "straight"), stop_at)


def test_ema_keeps_the_exponential_average_of_the_trained_weights(en_corpus, tmp_path):
    for steps in (1, 2):
        assert main(train_args(en_corpus, "--epochs", "1", "--ema", "0.75", "--max-steps", str(steps),
                               "--run-dir", f"s{steps}")) == 0
    one, two = (torch.load(tmp_path / f"s{n}" / "last.pt", weights_only=True) for n in (1, 2))
    assert one["ema_updates"] == 1 and two["ema_updates"] == 2
    assert_same_weights(one["model_state"], one["train_model_state"])  # the first update copies the weights
    for k, w1 in one["train_model_state"].items():  # then average = 0.75 * average + 0.25 * weights
        w2 = two["train_model_state"][k]
        torch.testing.assert_close(two["model_state"][k], 0.75 * w1 + 0.25 * w2, rtol=1e-6, atol=1e-7)
        assert not torch.equal(w1, w2), k
    # The average is what was validated and what generate loads.
    cfg = LMConfig(**two["model_config"])
    model = LanguageModel(cfg)
    model.load_state_dict(two["model_state"])
    data = lm.prepare_text(LMTrainConfig(corpus=str(en_corpus), batch_size=4, eval_batch_size=3, bptt=8),
                           torch.device("cpu"), Vocab.from_dict(two["vocab"]))
    val = evaluate_lm(model, data.val, 8, Runtime(torch.device("cpu")))
    assert val["ppl"] == pytest.approx(two["state"]["history"][-1]["val_ppl"], rel=1e-6)


def test_max_steps_run_resumes_to_the_same_weights(en_corpus, tmp_path):
    args = train_args(en_corpus, "--epochs", "2")
    assert main([*args, "--run-dir", "straight"]) == 0
    assert main([*args, "--run-dir", "dry", "--max-steps", "7"]) == 0
    ckpt = torch.load(tmp_path / "dry" / "last.pt", weights_only=True)
    assert ckpt["state"]["step_in_epoch"] == 7 and len(ckpt["hidden"]) == 2  # LSTM (h, c), carried on resume
    assert main(["train", "--resume", "dry", "--max-steps", "0"]) == 0
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "dry" / "last.pt"))
    # The dry run's partial epoch keeps its own history record (as for image classification).
    dry = history(tmp_path / "dry")
    assert (dry[0]["epoch"], dry[0]["step"]) == (1, 7)
    straight = history(tmp_path / "straight")
    assert drop_interrupted_train_loss(dry[1:], 7) == drop_interrupted_train_loss(straight, 7)


def test_max_steps_run_scores_leading_windows_and_says_so(en_corpus, capsys, monkeypatch):
    monkeypatch.setattr(lm, "EVAL_SAMPLE_WINDOWS", 1)  # the tiny splits hold 2-3 windows per stream
    assert main(train_args(en_corpus, "--epochs", "1", "--run-dir", "whole", "--json")) == 0
    whole = json.loads(capsys.readouterr().out)
    assert "eval_sample" not in whole and whole["test_tokens"] == whole["tokens"]["test"] - 1  # every target
    assert main(train_args(en_corpus, "--max-steps", "2", "--run-dir", "dry", "--json")) == 0
    out = capsys.readouterr()
    summary, counts = json.loads(out.out), whole["tokens"]
    assert summary["eval_sample"] == {"unit": "tokens", "val": 3 * 8, "test": 3 * 8}  # 3 streams x 1 window of 8
    assert summary["test_tokens"] == 24 and summary["history"][0]["partial"]
    assert re.search(r"^epoch 1/25 \(partial\)  train loss \d\.\d{4}  val loss", out.err, re.M)
    assert summary["test_scored"] == f"best epoch 1; a sample of 24 of {counts['test']} test tokens, --max-steps run"
    assert (f"--max-steps run: validation and test score a sample of 24 of {counts['val']} val and 24 of "
            f"{counts['test']} test tokens (the first 1 windows of each evaluation stream), not the whole "
            "splits") in out.err


def test_resume_refuses_changes_to_the_model_data_and_a_cosine_schedule(en_corpus, tmp_path, capsys):
    assert main(train_args(en_corpus, "--epochs", "1", "--max-steps", "2", "--run-dir", "r")) == 0
    capsys.readouterr()
    for flag, value in (("--cell", "gru"), ("--impl", "scratch"), ("--bptt", "16"), ("--hidden-size", "64"),
                        ("--corpus", "other.txt"), ("--lr", "0.1"),
                        ("--epochs", "3")):  # the cosine schedule was laid out over the saved number of epochs
        assert main(["train", "--resume", "r", flag, value, "--quiet"]) == 2
        assert f"{flag} cannot change when resuming" in error_line(capsys)
    assert main(["train", "--resume", "r", "--max-steps", "0", "--log-every", "3", "--json"]) == 0
    finished = json.loads(capsys.readouterr().out)
    assert finished["status"] == "finished" and finished["epochs"] == 1
    assert main(["train", "--resume", "r", "--json"]) == 0  # a finished run: nothing to train, scored again
    again = json.loads(capsys.readouterr().out)
    assert (again["steps"], again["test_ppl"]) == (finished["steps"], finished["test_ppl"])


def test_resume_extends_a_constant_schedule_exactly(en_corpus, tmp_path):
    args = train_args(en_corpus, "--schedule", "constant")
    assert main([*args, "--epochs", "2", "--run-dir", "straight"]) == 0
    assert main([*args, "--epochs", "1", "--run-dir", "short"]) == 0
    assert main(["train", "--resume", "short", "--epochs", "2"]) == 0
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "short" / "last.pt"))
    assert history(tmp_path / "short") == history(tmp_path / "straight")


def test_resume_after_the_corpus_file_changed_keeps_the_saved_vocabulary(en_corpus, tmp_path, capsys):
    assert main(train_args(en_corpus, "--epochs", "1", "--max-steps", "2", "--run-dir", "r")) == 0
    before = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["vocab"]
    en_corpus.write_text("#$%&*+/<=>@^|~" * 3 + en_corpus.read_text())  # new characters: a bigger vocabulary
    capsys.readouterr()
    assert main(["train", "--resume", "r", "--max-steps", "0"]) == 0
    assert "not in the saved vocabulary" in capsys.readouterr().err
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["vocab"] == before


def test_early_stopping_on_val_perplexity(en_corpus, capsys):
    # lr 0: the weights never change, so no epoch after the first improves and patience 2 stops after epoch 3.
    code = main(train_args(en_corpus, "--epochs", "9", "--lr", "0", "--patience", "2", "--run-dir", "r", "--json"))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and (summary["status"], summary["epochs"], summary["best_epoch"]) == ("early-stopped", 3, 1)


DIVERGE = ["--lr", "1e38", "--optimizer", "sgd", "--momentum", "0", "--clip", "0", "--weight-decay", "0"]


def test_a_diverging_run_stops_with_a_one_line_error(en_corpus, capsys):
    assert main(train_args(en_corpus, *DIVERGE, "--run-dir", "r", "--quiet")) == 2
    # After the step-1 update at lr 1e38 the logits overflow. Whether cross-entropy then reads inf or nan
    # (inf - inf inside its log-sum-exp) depends on the order of the vector kernel's operations, which differs
    # between CPUs; either is the first bad loss, found at the step-2 reading.
    assert re.search(r"loss became (inf|nan) at step 2 ", error_line(capsys))


def test_a_run_diverging_in_its_first_epoch_says_no_checkpoint_was_kept(en_corpus, tmp_path, capsys):
    assert main(train_args(en_corpus, *DIVERGE, "--run-dir", "r", "--quiet")) == 2
    message = error_line(capsys)
    assert not (tmp_path / "r" / "last.pt").exists() and "last.pt" not in message
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"


# --- configuration and input errors -----------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["train", "fashion-mnist", "--bptt", "8"], "'bptt' is not a setting for image classification"),
    (["train", "mnist", "--cell", "gru"], "'cell' is not a setting for image classification"),
    (["train", "lm", "--augment"], "'augment' is not a setting for language models (train lm)"),
    (["train", "lm", "--model", "vgg-small"], "'model' is not a setting for language models"),
    (["train", "lm", "--recipe", "strong"], "'recipe' is not a setting for language models"),
])
def test_flags_of_the_other_kind_of_task_are_rejected(capsys, args, message):
    assert main([*args, "--quiet"]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--dropout", "1.5"], "dropout must be in [0, 1)"),
    (["--embed-dropout", "-0.1"], "embed_dropout must be in [0, 1)"),
    (["--ema", "1"], "ema must be in [0, 1)"),
    (["--bptt", "0"], "bptt must be at least 1"),
    (["--layers", "0"], "layers must be at least 1"),
    (["--clip", "-1"], "clip must not be negative"),
    (["--cell", "transformer"], "invalid choice"),
    (["--level", "syllable"], "invalid choice"),
    (["--tie"], "--tie"),  # embed size 16, hidden size 32
])
def test_bad_values_are_one_line_errors(en_corpus, tmp_path, capsys, flags, message):
    assert main([*train_args(en_corpus, "--run-dir", "r", "--quiet"), *flags]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "r").exists()  # refused before a run directory is made


def test_tie_with_equal_sizes_shares_the_weights(en_corpus, tmp_path):
    assert main(train_args(en_corpus, "--tie", "--embed-size", "32", "--max-steps", "2", "--run-dir", "r")) == 0
    ckpt = torch.load(tmp_path / "r" / "best.pt", weights_only=True)
    assert ckpt["model_config"]["tie"] is True
    assert torch.equal(ckpt["model_state"]["decoder.weight"], ckpt["model_state"]["embedding.weight"])


def test_config_file_with_task_lm(en_corpus, tmp_path, capsys):
    (tmp_path / "lm.toml").write_text(f'task = "lm"\ncorpus = "{en_corpus}"\ncell = "gru"\nembed-size = 16\n'
                                      f'hidden_size = 32\nlayers = 1\nbptt = 8\nbatch_size = 4\ndevice = "cpu"\n'
                                      f'max_steps = 50\n')
    code = main(["train", "--config", "lm.toml", "--max-steps", "2", "--run-dir", "r", "--json"])  # flags win
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and (summary["task"], summary["cell"], summary["steps"]) == ("lm", "gru", 2)
    saved = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert (saved["hidden_size"], saved["max_steps"], saved["bptt"]) == (32, 2, 8)
    (tmp_path / "bad.toml").write_text('task = "lm"\naugment = true\n')
    assert main(["train", "--config", "bad.toml", "--quiet"]) == 2
    assert "'augment' is not a setting for language models" in error_line(capsys)


def write_corpus(tmp_path, content: bytes):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("content, flags, message", [
    (b"abc " * 50 + b"\xff" + b" def" * 50, [], "not valid utf-8: bad byte 0xff at byte offset 200"),
    (b"", [], "is empty"),
    (b" \n\t\n", [], "is empty"),
    (b"abcdefghij", [], "corpus too short"),
    (b"some text. " * 40, ["--bptt", "200"], "--bptt 200: the training streams hold only 99 tokens each"),
    (b"some text. " * 40, ["--encoding", "klingon"], "unknown encoding 'klingon'"),
])
def test_corpus_errors_are_one_line(tmp_path, capsys, content, flags, message):
    corpus = write_corpus(tmp_path, content)
    assert main([*train_args(corpus, "--run-dir", "r", "--quiet"), *flags]) == 2
    assert message in error_line(capsys)


def test_missing_corpus_and_folder_are_errors(tmp_path, capsys):
    assert main([*train_args(tmp_path / "nope.txt"), "--quiet"]) == 2
    assert "no corpus" in error_line(capsys)
    assert main([*train_args(tmp_path), "--quiet"]) == 2
    assert "is a folder" in error_line(capsys)


def test_a_latin1_corpus_trains_with_its_encoding(tmp_path):
    corpus = write_corpus(tmp_path, "Café crème. Über alles. ".encode("latin-1") * 40)
    assert main(train_args(corpus, "--encoding", "latin-1", "--max-steps", "2", "--run-dir", "r")) == 0
    tokens = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["vocab"]["tokens"]
    assert {"é", "è", "Ü"} <= set(tokens)


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_rebuilds_vocab_and_model_on_its_own(en_corpus, tmp_path):
    assert main(train_args(en_corpus, "--epochs", "1", "--cell", "gru", "--run-dir", "r")) == 0
    ckpt = torch.load(tmp_path / "r" / "best.pt", weights_only=True)  # built-in types and tensors only
    assert (ckpt["task"], ckpt["model_name"]) == ("lm", "lm-gru")
    vocab = Vocab.from_dict(ckpt["vocab"])
    cfg = LMTrainConfig(**ckpt["train_config"])
    data = lm.prepare_text(cfg, torch.device("cpu"))
    assert vocab.tokens == data.vocab.tokens and vocab.level == "char"
    model = LanguageModel(LMConfig(**ckpt["model_config"]))  # no training config needed
    model.load_state_dict(ckpt["model_state"])
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    result = evaluate_lm(model, data.test, cfg.bptt, Runtime(torch.device("cpu")))
    assert result["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)  # the test split was scored with best.pt


# --- the real corpus ---------------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_DATA / "timemachine" / "timemachine.txt").is_file(),
                    reason="shared/data/timemachine absent")
def test_real_timemachine_token_counts(tmp_path, capsys):
    code = main(["train", "lm", "--corpus", "timemachine", "--data-dir", str(SHARED_DATA), *TINY_LM,
                 "--bptt", "32", "--eval-batch-size", "64", "--max-steps", "3", "--run-dir", "r", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["steps"] == 3
    assert summary["tokens"] == {"train": 161081, "val": 8949, "test": 8949}
    assert summary["vocab_size"] == 71 and summary["test_tokens"] == 8948
    assert summary == json.loads((tmp_path / "r" / "summary.json").read_text())
