"""`torchlab generate`: continue a prompt with a trained language model, or list the likely next tokens."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import TINY, error_line
from torchlab.cli import main
from torchlab.data.text import tokenize
from torchlab.models.rnn import LanguageModel, LMConfig
from torchlab.models.sampling import pick

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = ("The lamp was bright. ", "We sat and listened. ", "He smiled at us. ", "Nobody believed him.\n",
             "The time traveller spoke. ")
LINES = ("床前明月光，疑是地上霜。\n", "举头望明月，低头思故乡。\n", "白日依山尽，黄河入海流。\n",
         "欲穷千里目，更上一层楼。\n", "春眠不觉晓，处处闻啼鸟。\n")


def shuffled(pieces, n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(pieces) for _ in range(n))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """best.pt of three tiny models trained once for the module: English chars, English words, Chinese chars."""
    root = tmp_path_factory.mktemp("generate")
    (root / "en.txt").write_text(shuffled(SENTENCES, 100, seed=1))
    (root / "zh.txt").write_text(shuffled(LINES, 80, seed=2))
    threads = torch.get_num_threads()
    try:  # through the command line, the interface that stays while the training code changes
        for name, corpus, level in (("en", "en.txt", "char"), ("words", "en.txt", "word"), ("zh", "zh.txt", "char")):
            assert main(["train", "lm", "--corpus", str(root / corpus), "--level", level, "--device", "cpu",
                         "--embed-size", "16", "--hidden-size", "32", "--layers", "1", "--bptt", "8", "--batch-size",
                         "4", "--eval-batch-size", "3", "--epochs", "3", "--dropout", "0", "--embed-dropout", "0",
                         "--lr", "1e-2", "--weight-decay", "0", "--precision", "fp32", "--threads", "1",
                         "--run-dir", str(root / name), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return {name: root / name / "best.pt" for name in ("en", "words", "zh")}


def generate(capsys, checkpoint, *args) -> tuple[int, str, str]:
    code = main(["generate", str(checkpoint), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def generate_json(capsys, checkpoint, *args) -> dict:
    code, out, _ = generate(capsys, checkpoint, *args, "--json")
    assert code == 0
    return json.loads(out)




def rebuild(checkpoint):
    """The model and vocabulary straight from the checkpoint file, without torchlab's loading code."""
    ckpt = torch.load(checkpoint, weights_only=True)
    model = LanguageModel(LMConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), ckpt["vocab"]["tokens"]


# --- choosing tokens --------------------------------------------------------------------------


def test_greedy_is_deterministic_and_equals_recomputing_from_scratch(models, capsys):
    prompt = "The lamp"
    greedy = generate_json(capsys, models["en"], "--prompt", prompt, "--temperature", "0", "--tokens", "25")
    assert generate_json(capsys, models["en"], "--prompt", prompt, "--temperature", "0", "--tokens", "25",
                         "--seed", "9") == greedy  # no randomness at temperature 0
    # Oracle: rerun the whole text so far at every step (no carried state) and take the best token but <unk>.
    model, tokens = rebuild(models["en"])
    ids = [tokens.index(ch) for ch in prompt]
    with torch.no_grad():
        for _ in range(25):
            logits = model(torch.tensor([ids]))[0][0, -1]
            logits[0] = float("-inf")
            ids.append(int(logits.argmax()))
    assert greedy["new_tokens"] == [tokens[i] for i in ids[len(prompt):]]
    assert greedy["text"] == prompt + "".join(greedy["new_tokens"])


def test_sampling_repeats_with_its_seed_and_differs_with_another(models, capsys):
    args = ("--prompt", "He ", "--temperature", "1.5", "--tokens", "40")
    first = generate_json(capsys, models["en"], *args, "--seed", "1")
    assert generate_json(capsys, models["en"], *args, "--seed", "1") == first
    assert generate_json(capsys, models["en"], *args, "--seed", "2")["text"] != first["text"]


def test_top_k_1_is_greedy(models, capsys):
    args = ("--prompt", "We sat", "--tokens", "20")
    greedy = generate_json(capsys, models["en"], *args, "--temperature", "0")
    for seed in ("0", "5"):
        sampled = generate_json(capsys, models["en"], *args, "--top-k", "1", "--temperature", "1.2", "--seed", seed)
        assert sampled == greedy


@pytest.mark.parametrize("n", [1, 7])
def test_tokens_adds_exactly_n_characters(models, capsys, n):
    result = generate_json(capsys, models["en"], "--prompt", "The time", "--tokens", str(n))
    assert len(result["new_tokens"]) == n and result["text"] == "The time" + "".join(result["new_tokens"])
    code, out, _ = generate(capsys, models["en"], "--prompt", "The time", "--tokens", str(n))
    assert code == 0 and out == result["text"] + "\n"  # plain output: the text alone


def test_word_level_adds_n_words_and_the_text_retokenises(models, capsys):
    prompt = "Nobody believed"
    result = generate_json(capsys, models["words"], "--prompt", prompt, "--tokens", "6", "--seed", "3")
    assert len(result["new_tokens"]) == 6 and "<unk>" not in result["new_tokens"]
    assert tokenize(result["text"], "word") == tokenize(prompt, "word") + result["new_tokens"]


def test_next_lists_the_k_most_likely_tokens(models, capsys):
    result = generate_json(capsys, models["en"], "--prompt", "The lam", "--next", "5")
    probs = [t["prob"] for t in result["next"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    model, tokens = rebuild(models["en"])
    with torch.no_grad():
        expected = model(torch.tensor([[tokens.index(ch) for ch in "The lam"]]))[0][0, -1].softmax(0).topk(5)
    assert [t["token"] for t in result["next"]] == [tokens[i] for i in expected.indices]
    assert probs == pytest.approx(expected.values.tolist(), abs=1e-6)
    everything = generate_json(capsys, models["en"], "--prompt", "The lam", "--next", "1000")["next"]
    with torch.no_grad():
        unk = model(torch.tensor([[tokens.index(ch) for ch in "The lam"]]))[0][0, -1].softmax(0)[0].item()
    assert "<unk>" not in [t["token"] for t in everything]  # never a real next token; the rest keep their values
    assert len(everything) == len(tokens) - 1
    assert sum(t["prob"] for t in everything) == pytest.approx(1 - unk, abs=1e-5)
    code, out, _ = generate(capsys, models["en"], "--prompt", "The lam", "--next", "3")
    assert code == 0 and out.startswith("after 'The lam', the most likely next tokens:") and len(out.splitlines()) == 4


def test_unknown_prompt_characters_warn_and_still_generate(models, capsys):
    code, out, err = generate(capsys, models["en"], "--prompt", "The Ω lamp€", "--tokens", "5", "--json")
    assert code == 0 and "warning: not in the vocabulary" in err and "'Ω'" in err and "'€'" in err
    result = json.loads(out)
    assert result["unknown"] == ["Ω", "€"] and result["text"].startswith("The Ω lamp€")
    assert len(result["new_tokens"]) == 5


def test_chinese_prompt_on_a_chinese_model(models, capsys):
    args = ("--prompt", "明月", "--tokens", "12", "--temperature", "0")
    code, out, _ = generate(capsys, models["zh"], *args, "--json")
    assert code == 0 and "明月" in out  # the characters themselves, not \\u escapes
    result = json.loads(out.encode("utf-8"))  # valid JSON in UTF-8
    assert result["text"].startswith("明月") and len(result["new_tokens"]) == 12 and result["unknown"] == []
    vocab = set(torch.load(models["zh"], weights_only=True)["vocab"]["tokens"])
    assert set(result["new_tokens"]) <= vocab - {"<unk>"}
    assert generate_json(capsys, models["zh"], "--prompt", "春眠", "--next", "3")["next"][0]["token"] in vocab
    code, out, _ = generate(capsys, models["zh"], *args)
    assert code == 0 and out == result["text"] + "\n"


def test_a_run_directory_is_read_through_its_best_checkpoint(models, capsys):
    by_dir = generate_json(capsys, models["en"].parent, "--prompt", "We", "--temperature", "0", "--tokens", "8")
    assert by_dir == generate_json(capsys, models["en"], "--prompt", "We", "--temperature", "0", "--tokens", "8")


# --- --gates ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells(models, tmp_path_factory) -> dict:
    """best.pt of a tiny LSTM (the module's Chinese model), and of a 2-layer GRU and a plain RNN trained alike."""
    root = tmp_path_factory.mktemp("cells")
    (root / "zh.txt").write_text(shuffled(LINES, 80, seed=2))
    threads = torch.get_num_threads()
    try:
        for cell, layers in (("gru", "2"), ("rnn", "1")):
            assert main(["train", "lm", "--corpus", str(root / "zh.txt"), "--cell", cell, "--layers", layers,
                         "--device", "cpu", "--embed-size", "16", "--hidden-size", "32", "--bptt", "8",
                         "--batch-size", "4", "--eval-batch-size", "3", "--epochs", "1", "--dropout", "0",
                         "--precision", "fp32", "--threads", "1", "--run-dir", str(root / cell), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"lstm": models["zh"], "gru": root / "gru" / "best.pt", "rnn": root / "rnn" / "best.pt"}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gates_writes_a_png_and_still_generates(cells, capsys, tmp_path, cell):
    out = tmp_path / f"{cell}.png"
    args = ("--prompt", "床前明月", "--tokens", "6", "--temperature", "0")
    code, text, _ = generate(capsys, cells[cell], *args, "--gates", str(out))
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 0 and png.height > 0
    plain = generate(capsys, cells[cell], *args)[1]
    assert code == 0 and text == plain + f"gates saved to {out}\n"  # the same text, then where the heat map is
    result = generate_json(capsys, cells[cell], *args, "--gates", str(tmp_path / "again.png"))
    assert result["gates"] == str(tmp_path / "again.png") and (tmp_path / "again.png").stat().st_size > 0


def test_gates_of_the_api_are_those_of_the_checkpoint(cells):
    from torchlab import api

    gates = api.load(cells["gru"], "cpu").gates("明月光")
    assert gates.cell == "gru" and gates.tokens == list("明月光") and len(gates.layers) == 2
    assert gates.layers[1].gates["update"].shape == (3, 32)


@pytest.mark.parametrize("cell, prompt, out, message", [
    ("rnn", "明月", "g.png", "--gates: a plain RNN has no gates (train one with `torchlab train lm --cell lstm`"),
    ("lstm", "  ", "g.png", "--prompt is empty"),
    ("lstm", "明月Ω€", "g.png", "--gates: not in the vocabulary: 'Ω' '€'"),
    ("lstm", "明月", "no/such/folder/g.png", "--gates no/such/folder/g.png: folder no/such/folder does not exist"),
    ("lstm", "明月", "g.jpg", "--gates g.jpg: not a .png file name"),
    ("lstm", "明月", "taken.png", "--gates taken.png: exists already (choose another name, or delete it first)"),
])
def test_bad_gates_requests_are_one_line_errors_before_any_output(cells, capsys, cell, prompt, out, message):
    Path("taken.png").write_bytes(b"someone's file")
    assert main(["generate", str(cells[cell]), "--prompt", prompt, "--gates", out, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before anything was generated
    assert captured.err.startswith("torchlab: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err and "Traceback" not in captured.err
    assert Path("taken.png").read_bytes() == b"someone's file" and not Path("g.png").exists()


# --- pick -------------------------------------------------------------------------------------


def test_pick_never_returns_unk():
    logits = torch.tensor([9.0, 1.0, 3.0, 2.0])  # <unk> (id 0) is the most likely
    assert pick(logits, 0.0, 0, torch.Generator()) == 2
    gen = torch.Generator().manual_seed(0)
    assert 0 not in {pick(logits, 1.0, 0, gen) for _ in range(300)}
    assert pick(logits, 0.7, 100, gen) in (1, 2, 3)  # a top-k above the vocabulary size keeps every token


def test_pick_samples_from_the_softmax_and_top_k_keeps_the_best():
    logits = torch.tensor([0.0, 0.5, 1.0, 2.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    draws = torch.tensor([pick(logits, 1.0, 0, gen) for _ in range(4000)])
    expected = logits[1:].softmax(0)  # <unk> left out
    observed = torch.bincount(draws, minlength=5)[1:] / len(draws)
    assert torch.allclose(observed, expected, atol=0.03)
    assert {pick(logits, 2.0, 2, gen) for _ in range(300)} == {2, 3}
    cold = torch.bincount(torch.tensor([pick(logits, 0.05, 0, gen) for _ in range(300)]), minlength=5)
    assert cold[3] == 300  # a low temperature is all but greedy


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--prompt", "   "], "--prompt is empty"),
    (["--prompt", "a", "--tokens", "0"], "--tokens 0: must be at least 1"),
    (["--prompt", "a", "--temperature", "-0.5"], "--temperature -0.5: must be 0 or more"),
    (["--prompt", "a", "--top-k", "-1"], "--top-k -1: must be 0 or more"),
    (["--prompt", "a", "--next", "-2"], "--next -2: must be at least 1"),
    (["--prompt", "a", "--next", "0"], "--next 0: must be at least 1"),
    (["--prompt", "a", "--tokens", "many"], "invalid int value: 'many'"),
    (["--prompt", "a", "--device", "tpu"], "invalid choice: 'tpu'"),
    ([], "the following arguments are required: --prompt"),
])
def test_bad_flags_are_one_line_errors(models, capsys, args, message):
    assert main(["generate", str(models["en"]), *args, "--quiet"]) == 2
    assert message in error_line(capsys)


def test_missing_or_unreadable_checkpoint(tmp_path, capsys):
    assert main(["generate", "nope.pt", "--prompt", "a", "--quiet"]) == 2
    assert "nope.pt: no such checkpoint" in error_line(capsys)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert main(["generate", "notes.pt", "--prompt", "a", "--quiet"]) == 2
    assert "not a readable torchlab checkpoint" in error_line(capsys)


def test_a_classification_checkpoint_is_refused(tiny_data, capsys):
    assert main(["train", "fashion-mnist", "--data-dir", str(tiny_data), *TINY, "--max-steps", "1",
                 "--run-dir", "cls", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["generate", "cls/best.pt", "--prompt", "a", "--quiet"]) == 2
    line = error_line(capsys)
    assert "checkpoint is for task 'fashion-mnist', not 'lm'" in line
    assert "an image classifier (notes-cnn), and `torchlab generate` needs a language model" in line
    assert "torchlab predict cls/best.pt IMAGE" in line


@pytest.mark.parametrize("damage", ["model size", "vocabulary"])
def test_a_damaged_language_model_checkpoint_is_refused(models, tmp_path, capsys, damage):
    ckpt = torch.load(models["en"], weights_only=True)
    if damage == "model size":
        ckpt["model_config"]["hidden_size"] = 64  # the weights are for 32
    else:
        ckpt["vocab"]["tokens"] = ckpt["vocab"]["tokens"][1:]  # <unk> must come first
    torch.save(ckpt, tmp_path / "damaged.pt")
    assert main(["generate", "damaged.pt", "--prompt", "a", "--quiet"]) == 2
    assert "not a usable language-model checkpoint" in error_line(capsys)
