"""Text for language models: read a file, cut it into tokens, number them, batch them.

The pipeline, for a corpus of documents (see `torchlab.data.corpora`):

    tokens per document  --split_documents-->  train / val / test token streams
    train tokens         --Vocab.build------>  vocabulary (never sees val or test)
    stream               --Vocab.encode----->  ids [N]
    ids [N]              --batchify--------->  B parallel streams [B, N // B]
    streams [B, L]       --windows---------->  (x [B, T], y [B, T]) for truncated BPTT

Two tokenisation levels:

* char: every character is a token, spaces, newlines and punctuation included, so
  `"".join(tokens) == text` exactly.
* word: words, with punctuation split off; whitespace is dropped except "\\n",
  kept as a token so generated text keeps its line breaks. A word is a run of
  letters and digits that may hold an apostrophe or a single hyphen between two
  letters: "Time-Traveller's", "don't" and "after-dinner" are one token each
  (splitting them would make the model learn "'s" and "t" as words), while a
  quote or dash at a word's edge is punctuation: "'You" -> "'", "You" and
  "way--marking" -> "way", "--", "marking". "_" counts as punctuation (it marks
  italics in Gutenberg texts). Han characters are always one token each, even
  at word level and even inside an English text: Chinese has no spaces to find
  words by, and a character model is the usual choice for it.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from torchlab.errors import UserError
from torchlab.i18n import _

UNK = "<unk>"
LEVELS = ("char", "word")
LANGUAGES = ("en", "zh")

# Han ideographs: the unified block, extension A, compatibility ideographs, extensions B and later.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_CHAR = re.compile(f"[{HAN}]")
_LETTER = f"(?:(?![{HAN}])[^\\W_])"  # a letter or digit that is not Han
_WORD_TOKEN = re.compile(
    f"\n"  # line break, kept
    f"|[{HAN}]"  # one Han character
    f"|{_LETTER}+(?:['\u2019-]{_LETTER}+)*"  # word, inner apostrophes and hyphens allowed
    f"|--+"  # dash made of hyphens
    f"|[^\\s]"  # any other visible character: punctuation, one at a time
)


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of a file, decoded strictly; a UTF-8 byte-order mark is dropped.

    Line ends are normalised to "\\n" (as Python's text mode does); nothing else changes.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(_("{path} is a folder, not a text file").format(path=path), _("pass the path of a .txt file"))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(_("text file {path} not found").format(path=path), _("check the path")) from None
    except OSError as e:
        raise UserError(_("cannot read {path}: {error}").format(path=path, error=e.strerror), _("check the file's permissions")) from None
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise UserError(_("unknown encoding {encoding} for {path}").format(encoding=repr(encoding), path=path),
                        _("pass --encoding with a Python codec name, e.g. utf-8, gb18030, latin-1")) from None
    except UnicodeDecodeError as e:
        raise UserError(_("{path} is not valid {encoding}: bad byte 0x{byte} at byte offset {offset}")
                        .format(path=path, encoding=encoding, byte=f"{raw[e.start]:02x}", offset=e.start),
                        _("pass the file's encoding, e.g. --encoding gb18030 (Chinese) or --encoding latin-1")) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise UserError(_("{path} is empty (or only whitespace)").format(path=path),
                        _("a language model needs some text to learn from"))
    return text


def han_share(text: str) -> float:
    """The share of Han characters among the letters of `text` (0 when it has none)."""
    letters = sum(ch.isalpha() for ch in text)
    return len(_HAN_CHAR.findall(text)) / letters if letters else 0.0


def guess_language(text: str) -> str:
    """ "zh" when at least half the letters are Han characters, else "en"."""
    return "zh" if han_share(text) >= 0.5 else "en"


def tokenize(text: str, level: str, language: str | None = None) -> list[str]:
    """Cut `text` into tokens at `level` ("char" or "word"; see the module docstring).

    `language` is only checked: the rules decide per character (a Han character is
    one token in any text), so mixed English and Chinese text needs no switch.
    """
    if level not in LEVELS:
        raise UserError(_("unknown token level {level}").format(level=repr(level)), _("choose char or word"))
    if language is not None and language not in LANGUAGES:
        raise UserError(_("unknown language {language}").format(language=repr(language)), _("choose en or zh"))
    if level == "char":
        return list(text)
    return _WORD_TOKEN.findall(text)


# How word-level tokens are glued back together (decoding cannot know the original spacing).
_CLOSING = set(".,;:!?)]}%\u2019\u201d\u00bb\u2026")  # no space before these
_OPENING = set("([{\u2018\u201c\u00ab")  # no space after these
_QUOTES = {"'", '"', "_"}  # the same mark opens and closes ("_" marks italics): see join_words


def _is_wide(token: str) -> bool:
    """Han characters and CJK / full-width punctuation are written without spaces."""
    ch = token[0]
    wide_punctuation = ("\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef") and not ch.isalnum()
    return bool(_HAN_CHAR.match(ch)) or wide_punctuation


def join_words(tokens: Iterable[str]) -> str:
    """Word-level tokens as readable text: spaces between words, none before punctuation or
    around "\\n" and dashes, none between Chinese characters.

    A quote mark (' " _) opens at a line start, after an opening mark, or when no quote of
    its kind is open, and closes otherwise; a blank line closes every quote (a quote that
    runs over paragraphs reopens each one). `tokenize(join_words(t), "word") == t` for
    tokens that came from `tokenize` (tested), but the original spacing is not restored:
    "a  b" comes back as "a b".
    """
    out: list[str] = []
    prev, prev_opens = None, True  # prev_opens: the next token needs no space before it
    inside: set[str] = set()  # quote marks open now
    for tok in tokens:
        if tok == "\n" and prev == "\n":
            inside.clear()
        opens = tok == "\n" or tok in _OPENING or tok.startswith("--")
        if tok in _QUOTES:
            opens = prev_opens or tok not in inside
            (inside.add if opens else inside.discard)(tok)
        glued = (prev_opens or tok == "\n" or tok in _CLOSING or tok.startswith("--")
                 or (tok in _QUOTES and not opens) or _is_wide(tok) or _is_wide(prev))
        out.append(tok if glued else " " + tok)
        prev, prev_opens = tok, opens
    return "".join(out)


@dataclass(repr=False)
class Vocab:
    """Tokens numbered by frequency in the training text; index 0 is "<unk>"."""

    tokens: list[str]  # id -> token; tokens[0] == UNK
    level: str  # "char" or "word": how decode joins tokens

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"unknown token level {self.level!r}")
        if not self.tokens or self.tokens[0] != UNK or len(set(self.tokens)) != len(self.tokens):
            raise ValueError("a vocabulary lists distinct tokens, starting with <unk>")
        self.index = {tok: i for i, tok in enumerate(self.tokens)}

    @classmethod
    def build(cls, train_tokens: Iterable[str], level: str, min_freq: int = 1,
              max_size: int | None = None) -> Vocab:
        """Count the training tokens; order by count, ties by first appearance (deterministic).

        Tokens seen fewer than `min_freq` times are left out; `max_size` caps the
        vocabulary, "<unk>" included. Left-out tokens encode as "<unk>".
        """
        if min_freq < 1 or (max_size is not None and max_size < 2):
            raise UserError(_("bad vocabulary limits min_freq={min_freq}, max_size={max_size}")
                            .format(min_freq=min_freq, max_size=max_size),
                            _("min_freq >= 1 and max_size >= 2 (<unk> plus one token)"))
        counts = Counter(train_tokens)  # insertion order = first appearance
        counts.pop(UNK, None)
        kept = [tok for tok, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n >= min_freq]  # stable sort
        if max_size is not None:
            kept = kept[: max_size - 1]
        return cls([UNK, *kept], level)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} {self.level} tokens: {self.tokens[:8]}...)"

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def lookup(self, tokens: Iterable[str]) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens in order of first appearance), so callers can warn about them."""
        ids, unknown = [], {}
        for tok in tokens:
            i = self.index.get(tok, 0)
            if i == 0:
                unknown.setdefault(tok, None)
            ids.append(i)
        return ids, list(unknown)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """LongTensor [N] of ids; unknown tokens become 0 ("<unk>")."""
        return torch.tensor(self.lookup(tokens)[0], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Iterable[int]) -> str:
        """Text for ids [N]: joined as is at char level, with `join_words` at word level."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        tokens = [self.tokens[i] for i in ids]
        return "".join(tokens) if self.level == "char" else join_words(tokens)

    def to_dict(self) -> dict:
        """Built-in types only, so it can sit inside a `weights_only` checkpoint."""
        return {"level": self.level, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(list(d["tokens"]), d["level"])


@dataclass
class Splits:
    """Contiguous token streams; train + val + test is the whole (shuffled) corpus."""

    train: list[str]
    val: list[str]
    test: list[str]


def _check_fractions(val_frac: float, test_frac: float) -> None:
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(_("bad split fractions val={val}, test={test}").format(val=val_frac, test=test_frac),
                        _("each in [0, 1) and together below 1, e.g. 0.05 and 0.05"))


def _nearest(bounds: Sequence[int], target: float) -> int:
    """The value in sorted `bounds` closest to `target` (the smaller one on a tie)."""
    i = bisect.bisect_left(bounds, target)
    return min(bounds[max(i - 1, 0) : i + 1], key=lambda b: (abs(b - target), b))


def split_documents(docs: list[list[str]], val_frac: float = 0.05, test_frac: float = 0.05,
                    seed: int = 0, shuffle: bool = True) -> Splits:
    """Cut tokenised documents into contiguous train / val / test streams.

    One document (a book): cut on token counts; the last `test_frac` is test, the
    `val_frac` before it val. Several documents (poems): with `shuffle`, the
    document order is shuffled with `seed` first, so which poems land in val and
    test is seeded; the documents are then concatenated and cut at the document
    boundaries nearest the fractions, so no document is shared between splits.
    A split with a non-zero fraction needs at least 2 tokens (one input, one target).
    """
    _check_fractions(val_frac, test_frac)
    docs = list(docs)
    if shuffle and len(docs) > 1:
        random.Random(seed).shuffle(docs)
    stream = [tok for doc in docs for tok in doc]
    n = len(stream)
    # Where a split may start: after any token of a single text, else between documents.
    bounds: Sequence[int] = range(n + 1) if len(docs) == 1 else [0, *itertools.accumulate(map(len, docs))]
    test_start = _nearest(bounds, n * (1 - test_frac))
    val_start = min(_nearest(bounds, n * (1 - test_frac - val_frac)), test_start)
    splits = Splits(stream[:val_start], stream[val_start:test_start], stream[test_start:])
    for name, frac in (("train", 1.0), ("val", val_frac), ("test", test_frac)):
        size = len(getattr(splits, name))
        if frac > 0 and size < 2:
            raise UserError(_("corpus too short: {n} tokens in {docs} document(s) leave {size} for {name}")
                            .format(n=n, docs=len(docs), size=size, name=name),
                            _("use a longer text, or change the split fractions"))
    return splits


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """ids [N] -> B parallel streams [B, N // B] for training; the last N % B tokens are dropped.

    Stream b is the b-th contiguous slice of the text, so a hidden state carried from one
    window to the next sees each stream's text in order.
    """
    n = ids.numel()
    length = n // batch_size
    if length < 2:
        raise UserError(_("{n} tokens make streams of {length} for batch size {batch}; each needs >= 2")
                        .format(n=n, length=length, batch=batch_size), _("use a smaller batch size or a longer text"))
    return ids[: batch_size * length].view(batch_size, length)


def batchify_eval(ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """ids [N] -> blocks of streams that together score every target ids[1:] exactly once.

    N - 1 targets are shared out as M = (N - 1) // B per stream. Stream b is
    ids[b*M : (b+1)*M + 1]: it overlaps the next stream by one token, which is the
    last target here and the first input there, so no target is skipped or scored
    twice. The r = (N - 1) % B targets left over form a second block, one stream
    [1, r + 1]. Returns [main [B, M + 1]] or [main, tail]; run `windows` over each,
    each block starting from a fresh hidden state.
    """
    n = ids.numel()
    if n < 2:
        raise UserError(_("{n} token(s) cannot be scored: evaluation needs at least 2").format(n=n), _("use a longer text"))
    b = min(batch_size, n - 1)
    m, r = divmod(n - 1, b)
    starts = torch.arange(b) * m
    main = ids[starts.unsqueeze(1) + torch.arange(m + 1)]  # [B, M + 1]: row b = ids[b*M : b*M + M + 1]
    return [main, ids[b * m :].unsqueeze(0)] if r else [main]


def leading_windows(blocks: list[torch.Tensor], bptt: int, count: int) -> list[torch.Tensor]:
    """A bounded sample of an evaluation split from `batchify_eval`: the first `count` windows of every stream
    of the main block, [B, count * bptt + 1] (each stream a contiguous stretch of the text, scored from a zero
    state as the whole split is). Blocks that hold no more than that come back unchanged."""
    keep = count * bptt + 1
    if blocks[0].shape[1] <= keep:
        return blocks
    return [blocks[0][:, :keep]]


def window_starts(length: int, bptt: int, offset: int = 0) -> range:
    """Where the windows over streams of `length` tokens start; len() of it counts them."""
    return range(offset, length - 1, bptt)


def windows(streams: torch.Tensor, bptt: int, offset: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Successive (x [B, T], y [B, T]) windows over streams [B, L], y = x shifted by one token.

    Windows start at `offset`, `offset + bptt`, ...; T = bptt except for the last,
    shorter window. Together they score targets streams[:, offset + 1:], each once.
    Training passes a random offset in [0, bptt) each epoch so window edges move;
    evaluation passes 0.
    """
    if bptt < 1 or not 0 <= offset < bptt:
        raise ValueError(f"need bptt >= 1 and 0 <= offset < bptt, got bptt={bptt}, offset={offset}")
    length = streams.shape[1]
    for start in window_starts(length, bptt, offset):
        t = min(bptt, length - 1 - start)
        yield streams[:, start : start + t], streams[:, start + 1 : start + 1 + t]
