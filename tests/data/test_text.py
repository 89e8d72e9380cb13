"""Text data for language models: reading, corpora, tokens, vocabulary, splits and BPTT batches."""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA
from torchlab.data import corpora
from torchlab.data.corpora import load_corpus, to_simplified
from torchlab.data.text import (
    UNK, Vocab, batchify, batchify_eval, guess_language, join_words, leading_windows, read_text, split_documents,
    tokenize, windows,
)
from torchlab.errors import UserError

REAL_TIMEMACHINE = SHARED_DATA / "timemachine" / "timemachine.txt"
REAL_TANG = SHARED_DATA / "chinese-poetry-tang"
needs_timemachine = pytest.mark.skipif(not REAL_TIMEMACHINE.is_file(), reason="shared/data/timemachine absent")
needs_tang = pytest.mark.skipif(not REAL_TANG.is_dir(), reason="shared/data/chinese-poetry-tang absent")

ENGLISH = ("The Time Traveller (for so it will be convenient to speak of him)\n"
           "was expounding a recondite matter to us. 'You must follow me carefully.'\n")
CHINESE = "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。\n"


# --- read_text -------------------------------------------------------------------------------

def test_invalid_utf8_names_file_offset_and_encoding_flag(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"abc\xff def")
    with pytest.raises(UserError) as e:
        read_text(path)
    assert str(path) in e.value.message and "offset 3" in e.value.message and "0xff" in e.value.message
    assert "--encoding gb18030" in e.value.hint


def test_gb18030_file_reads_with_its_encoding(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_bytes("雲朵漂浮\n".encode("gb18030"))
    with pytest.raises(UserError, match="not valid utf-8"):
        read_text(path)
    assert read_text(path, encoding="gb18030") == "雲朵漂浮\n"


def test_unknown_encoding_names_the_flag(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello")
    with pytest.raises(UserError, match="unknown encoding") as e:
        read_text(path, encoding="no-such-codec")
    assert "--encoding" in e.value.hint


def test_bom_dropped_and_line_ends_normalised(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffone\r\ntwo\rthree\n".encode("utf-8"))
    assert read_text(path) == "one\ntwo\nthree\n"


@pytest.mark.parametrize("content", [b"", b" \n\t\n", "\ufeff".encode()], ids=["empty", "whitespace", "bom-only"])
def test_empty_file_is_an_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="empty"):
        read_text(path)


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(UserError, match="folder"):
        read_text(tmp_path)


# --- timemachine -----------------------------------------------------------------------------

def write_timemachine(folder: Path, text: str = ENGLISH) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "timemachine.txt"
    path.write_text(text, encoding="utf-8")
    return path


def no_network(*args, **kwargs):
    pytest.fail("network used")


@pytest.mark.parametrize("via", ["data-dir", "env"])
@pytest.mark.parametrize("layout", [".", "timemachine"], ids=["flat", "named"])
def test_timemachine_found_in_both_layouts(tmp_path, monkeypatch, via, layout):
    monkeypatch.setattr(corpora.urllib.request, "urlopen", no_network)
    root = tmp_path / "root"
    path = write_timemachine(root / layout)
    if via == "env":
        monkeypatch.setenv("TORCHLAB_DATA", str(root))
    corpus = load_corpus("timemachine", str(root) if via == "data-dir" else None)
    assert corpus.documents == [ENGLISH] and corpus.language == "en" and corpus.name == "timemachine"
    assert str(path) in corpus.source and ("--data-dir" if via == "data-dir" else "$TORCHLAB_DATA") in corpus.source


def test_data_dir_wins_over_env_and_cache(tmp_path, monkeypatch):
    write_timemachine(tmp_path / "env", "from env\n")
    write_timemachine(tmp_path / "cache" / "torchlab" / "timemachine", "from cache\n")
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "env"))
    write_timemachine(tmp_path / "dir", "from dir\n")
    assert load_corpus("timemachine", str(tmp_path / "dir")).documents == ["from dir\n"]
    assert load_corpus("timemachine", None).documents == ["from env\n"]
    monkeypatch.delenv("TORCHLAB_DATA")
    corpus = load_corpus("timemachine", None)
    assert corpus.documents == ["from cache\n"] and "user cache" in corpus.source


def test_timemachine_missing_offline_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora.urllib.request, "urlopen", no_network)
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "env"))
    with pytest.raises(UserError) as e:
        load_corpus("timemachine", None)
    for place in ("$TORCHLAB_DATA", "user cache", "offline"):
        assert place in e.value.message
    assert "--data-dir" in e.value.hint


def test_an_explicit_data_dir_without_the_corpus_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora.urllib.request, "urlopen", no_network)
    write_timemachine(tmp_path / "env")  # would be found: it must not be used
    monkeypatch.setenv("TORCHLAB_DATA", str(tmp_path / "env"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(UserError) as e:
        load_corpus("timemachine", str(tmp_path / "dir"))
    assert e.value.message == (f"corpus timemachine not found in --data-dir {tmp_path / 'dir'}; looked for "
                               "timemachine.txt in it and in timemachine/")


class FakeResponse(io.BytesIO):
    """What urlopen returns, as far as download_timemachine uses it."""


def fake_urlopen(data: bytes, calls: list):
    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(data)
    return urlopen


def test_download_checked_by_sha1_and_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")
    data = ENGLISH.encode()
    monkeypatch.setattr(corpora, "TIMEMACHINE_SHA1", hashlib.sha1(data).hexdigest())
    calls = []
    monkeypatch.setattr(corpora.urllib.request, "urlopen", fake_urlopen(data, calls))
    corpus = load_corpus("timemachine", None)
    cached = tmp_path / "cache" / "torchlab" / "timemachine" / "timemachine.txt"
    assert calls == [corpora.TIMEMACHINE_URL] and "downloaded" in corpus.source
    assert cached.read_bytes() == data and corpus.documents == [ENGLISH]
    assert "user cache" in load_corpus("timemachine", None).source and len(calls) == 1  # no second download


def test_download_with_wrong_sha1_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")
    monkeypatch.setattr(corpora.urllib.request, "urlopen", fake_urlopen(b"tampered", []))
    with pytest.raises(UserError, match="SHA-1"):
        load_corpus("timemachine", None)
    folder = tmp_path / "cache" / "torchlab" / "timemachine"
    assert not folder.exists() or not any(folder.iterdir())


def test_download_failure_is_reported(monkeypatch):
    monkeypatch.delenv("TORCHLAB_OFFLINE")

    def refused(url, timeout=None):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(corpora.urllib.request, "urlopen", refused)
    with pytest.raises(UserError, match="URLError.*connection refused"):
        load_corpus("timemachine", None)


@needs_timemachine
def test_real_timemachine_is_d2l_copy_used_as_is():
    assert hashlib.sha1(REAL_TIMEMACHINE.read_bytes()).hexdigest() == corpora.TIMEMACHINE_SHA1
    corpus = load_corpus("timemachine", str(SHARED_DATA))
    (text,) = corpus.documents
    assert text.startswith("The Time Machine, by H. G. Wells [1898]") and len(text) == 178979
    tokens = tokenize(text, "char")
    splits = split_documents([tokens])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (161081, 8949, 8949)  # 90 / 5 / 5
    assert splits.train + splits.val + splits.test == tokens
    assert "".join(splits.test).endswith("of man.\n")


@needs_timemachine
def test_real_timemachine_word_tokens_survive_a_decode():
    tokens = tokenize(read_text(REAL_TIMEMACHINE), "word")
    assert tokenize(join_words(tokens), "word") == tokens
    assert {"Time", "time", "Traveller's", "after-dinner", "\n"} <= set(tokens)  # case kept


# --- tang ------------------------------------------------------------------------------------

def poem(*lines, **extra):
    return {"author": "李白", "title": "t", "paragraphs": list(lines), **extra}


def write_tang(folder: Path) -> Path:
    """Two poem files (numbered so that text order and number order differ) and the 300-poems file."""
    folder.mkdir(parents=True, exist_ok=True)
    first = [poem("雲想衣裳花想容，", "春風拂檻露華濃。"), poem(), {"paragraphs": "not a list"}, "not a poem"]
    second = [poem("床前明月光，", "疑是地上霜。"), poem("舉頭望明月，", 7)]
    (folder / "poet.tang.0.json").write_text(json.dumps(first, ensure_ascii=False), encoding="utf-8")
    (folder / "poet.tang.1000.json").write_text(json.dumps(second, ensure_ascii=False), encoding="utf-8")
    (folder / "poet.tang.200.json").write_text(json.dumps([poem("白日依山盡。")], ensure_ascii=False))
    (folder / "tangshisanbaishou.json").write_text(json.dumps([poem("不用。")], ensure_ascii=False))
    return folder


def test_tang_poems_in_file_order_malformed_skipped_and_counted(tmp_path):
    write_tang(tmp_path / "poems")
    corpus = load_corpus("tang", str(tmp_path / "poems"), script="traditional")
    assert corpus.documents == ["雲想衣裳花想容，春風拂檻露華濃。\n", "白日依山盡。\n", "床前明月光，疑是地上霜。\n"]
    assert corpus.skipped == 4 and corpus.language == "zh" and corpus.name == "tang"


def test_tang_simplified_by_default(tmp_path):
    write_tang(tmp_path / "poems")
    corpus = load_corpus("tang", str(tmp_path / "poems"))
    assert corpus.documents[0] == "云想衣裳花想容，春风拂槛露华浓。\n"


def test_to_simplified_chunks_give_the_same_documents():
    docs = ["雲朵漂浮\n", "春風\n", "明月\n"] * 5
    assert to_simplified(docs, chunk_chars=1) == to_simplified(docs) == ["云朵漂浮\n", "春风\n", "明月\n"] * 5


@pytest.mark.parametrize("layout", [".", "chinese-poetry-tang", "chinese-poetry-tang/quantangshi"])
@pytest.mark.parametrize("via", ["data-dir", "env"])
def test_tang_found_in_each_layout(tmp_path, monkeypatch, layout, via):
    root = tmp_path / "root"
    write_tang(root / layout)
    if via == "env":
        monkeypatch.setenv("TORCHLAB_DATA", str(root))
    corpus = load_corpus("tang", str(root) if via == "data-dir" else None, script="traditional")
    assert len(corpus.documents) == 3


def test_tang_missing_says_where_to_get_it(tmp_path):
    with pytest.raises(UserError) as e:
        load_corpus("tang", str(tmp_path))
    assert "--data-dir" in e.value.message and "chinese-poetry" in e.value.hint
    assert "poet.tang.*.json" in e.value.message and "chinese-poetry-tang/" in e.value.message
    with pytest.raises(UserError) as e:
        load_corpus("tang", None)
    assert "no --data-dir, no $TORCHLAB_DATA" in e.value.message and "chinese-poetry" in e.value.hint


def test_tang_bad_json_is_a_user_error(tmp_path):
    (tmp_path / "poet.tang.0.json").write_text("[{", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_corpus("tang", str(tmp_path))


@needs_tang
def test_real_tang_counts_and_speed():
    start = time.perf_counter()
    corpus = load_corpus("tang", str(SHARED_DATA))
    seconds = time.perf_counter() - start
    assert corpus.skipped == 4 and len(corpus.documents) == 57607 - 4  # 4 poems have no lines
    assert corpus.documents[0].startswith("秦川雄帝宅，函谷壮皇居。")
    assert all(doc.endswith("\n") and doc.count("\n") == 1 for doc in corpus.documents)
    assert seconds < 20, f"loading and converting took {seconds:.1f} s"


# --- other text files ------------------------------------------------------------------------

def test_text_file_corpus_guesses_language(tmp_path):
    (tmp_path / "en.txt").write_text(ENGLISH, encoding="utf-8")
    (tmp_path / "zh.txt").write_bytes(CHINESE.encode("gb18030"))
    en = load_corpus(str(tmp_path / "en.txt"), None)
    zh = load_corpus(str(tmp_path / "zh.txt"), None, encoding="gb18030")
    assert (en.documents, en.language, en.name) == ([ENGLISH], "en", "en")
    assert (zh.documents, zh.language) == ([CHINESE], "zh")
    assert guess_language("Hello 世界 and more English words") == "en"


def test_unknown_corpus_lists_builtins():
    with pytest.raises(UserError, match="no corpus") as e:
        load_corpus("shakespeare", None)
    assert "timemachine" in e.value.hint and "tang" in e.value.hint


def test_unknown_script_is_an_error():
    with pytest.raises(UserError, match="script"):
        load_corpus("tang", None, script="cyrillic")


# --- tokens and vocabulary -------------------------------------------------------------------

@pytest.mark.parametrize("text", [ENGLISH, CHINESE])
def test_char_level_round_trip(text):
    tokens = tokenize(text, "char")
    assert "\n" in tokens and len(tokens) == len(text)
    vocab = Vocab.build(tokens, "char")
    assert vocab.decode(vocab.encode(tokens)) == text


def test_word_level_rules():
    text = "The Time-Traveller's way--marking _nil_ said. 'You don't!'\n(me)"
    assert tokenize(text, "word") == [
        "The", "Time-Traveller's", "way", "--", "marking", "_", "nil", "_", "said", ".",
        "'", "You", "don't", "!", "'", "\n", "(", "me", ")"]
    assert tokenize("舉頭望明月，\nabc中文", "word") == ["舉", "頭", "望", "明", "月", "，", "\n", "abc", "中", "文"]


def test_word_level_decode_is_readable_and_retokenises():
    text = ("'You must follow me,' he said. 'Is it _nil_?'\n"
            "way--marking (as we thought it) and A.D. 3.5\n\n床前明月光，疑是地上霜。\n")
    tokens = tokenize(text, "word")
    vocab = Vocab.build(tokens, "word")
    decoded = vocab.decode(vocab.encode(tokens))
    assert decoded == ("'You must follow me,' he said. 'Is it _nil_?'\n"
                       "way--marking (as we thought it) and A. D. 3. 5\n\n床前明月光，疑是地上霜。\n")
    assert tokenize(decoded, "word") == tokens


def test_bad_level_is_an_error():
    with pytest.raises(UserError, match="level"):
        tokenize("abc", "sentence")


def test_vocab_order_frequency_then_first_appearance():
    vocab = Vocab.build("b a b c a d".split(), "word")
    assert vocab.tokens == [UNK, "b", "a", "c", "d"]
    assert Vocab.build("b a b c a d".split(), "word", min_freq=2).tokens == [UNK, "b", "a"]
    assert Vocab.build("b a b c a d".split(), "word", max_size=3).tokens == [UNK, "b", "a"]


def test_vocab_from_train_only_maps_val_tokens_to_unk():
    splits = split_documents([list("aaaabbbbab" * 9 + "zz" * 5)], val_frac=0.05, test_frac=0.05)
    vocab = Vocab.build(splits.train, "char")
    assert "z" not in vocab and set(splits.val) == {"z"}
    ids, unknown = vocab.lookup(splits.val + ["a"])
    assert ids[:-1] == [0] * len(splits.val) and ids[-1] == vocab.index["a"] and unknown == ["z"]
    assert vocab.encode(splits.val).tolist() == [0] * len(splits.val)


def test_vocab_dict_round_trip_through_weights_only_checkpoint(tmp_path):
    vocab = Vocab.build(tokenize(ENGLISH, "word"), "word")
    torch.save({"vocab": vocab.to_dict()}, tmp_path / "ckpt.pt")
    loaded = Vocab.from_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["vocab"])
    assert loaded == vocab and loaded.index == vocab.index
    with pytest.raises(ValueError):
        Vocab.from_dict({"level": "char", "tokens": ["a", UNK]})


# --- splits ----------------------------------------------------------------------------------

def test_single_text_split_is_contiguous_with_test_last():
    tokens = [str(i) for i in range(1000)]
    splits = split_documents([tokens], val_frac=0.1, test_frac=0.05)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (850, 100, 50)
    assert splits.train + splits.val + splits.test == tokens


def poems(n: int) -> list[list[str]]:
    """n documents of 6 characters each."""
    return [list(f"p{i:04d}\n") for i in range(n)]


def test_documents_split_at_boundaries_with_seeded_shuffle():
    docs = poems(200)
    a, b = split_documents(docs, seed=1), split_documents(docs, seed=1)
    assert a == b and a != split_documents(docs, seed=2)
    for splits in (a, split_documents(docs, seed=0, shuffle=False)):
        parts = ["".join(s).splitlines(keepends=True) for s in (splits.train, splits.val, splits.test)]
        assert sorted(sum(parts, [])) == sorted("".join(d) for d in docs)  # whole documents, each once
        assert [len(p) for p in parts] == [180, 10, 10]
    unshuffled = split_documents(docs, shuffle=False)
    assert unshuffled.train + unshuffled.val + unshuffled.test == sum(docs, [])


def test_too_short_or_bad_fractions_are_errors():
    with pytest.raises(UserError, match="too short"):
        split_documents([list("abcdefghij")])  # 5% of 10 tokens rounds to 0 or 1
    with pytest.raises(UserError, match="too short"):
        split_documents(poems(3))
    with pytest.raises(UserError, match="fractions"):
        split_documents(poems(100), val_frac=0.6, test_frac=0.5)
    assert split_documents([list("abcdefghij")], val_frac=0, test_frac=0.2).val == []


# --- batches for truncated BPTT --------------------------------------------------------------

def test_batchify_makes_contiguous_streams_and_drops_the_tail():
    streams = batchify(torch.arange(23), batch_size=4)
    assert streams.shape == (4, 5)
    assert streams[1].tolist() == [5, 6, 7, 8, 9] and streams.flatten().tolist() == list(range(20))
    with pytest.raises(UserError, match="batch size"):
        batchify(torch.arange(7), batch_size=4)


@pytest.mark.parametrize("offset", [0, 2])
def test_windows_shift_by_one_and_cover_each_stream(offset):
    streams = batchify(torch.arange(60), batch_size=3)  # [3, 20]
    pairs = list(windows(streams, bptt=4, offset=offset))
    assert all(x.shape == y.shape and x.shape[0] == 3 for x, y in pairs)
    assert all(torch.equal(y, x + 1) for x, y in pairs)  # ids are positions, so y is x shifted
    assert [x.shape[1] for x, _ in pairs] == ([4, 4, 4, 4, 3] if offset == 0 else [4, 4, 4, 4, 1])
    assert torch.equal(torch.cat([y for _, y in pairs], dim=1), streams[:, offset + 1 :])


@pytest.mark.parametrize("n, batch_size, bptt", [(2, 4, 3), (10, 3, 2), (101, 4, 7), (97, 8, 35), (13, 12, 5)])
def test_eval_batches_score_every_target_exactly_once(n, batch_size, bptt):
    ids = torch.arange(n)  # token i is position i, so the scored targets are visible
    targets = []
    for block in batchify_eval(ids, batch_size):
        assert block.shape[0] <= batch_size
        for x, y in windows(block, bptt):
            assert torch.equal(y, x + 1)
            targets += y.flatten().tolist()
    assert Counter(targets) == Counter(range(1, n))  # len(ids) - 1 targets, each once
    with pytest.raises(UserError):
        batchify_eval(torch.arange(1), batch_size)


def test_leading_windows_keep_whole_streams_from_their_start():
    ids = torch.arange(101)
    blocks = batchify_eval(ids, 4)  # 100 targets: main [4, 26] (25 each), no tail
    sample = leading_windows(blocks, 5, 2)
    assert len(sample) == 1 and sample[0].shape == (4, 11)
    assert torch.equal(sample[0], blocks[0][:, :11])  # each stream's first 2 windows of 5 targets
    assert sum(y.numel() for _, y in windows(sample[0], 5)) == 4 * 10
    assert leading_windows(blocks, 5, 5) is blocks  # 5 windows cover the streams: nothing to cut
    tail = batchify_eval(torch.arange(104), 4)  # 103 targets: a main block and a tail of 3
    assert len(tail) == 2 and len(leading_windows(tail, 5, 2)) == 1  # a sample drops the tail
