"""Corpora for language models: two built-ins and any text file.

* "timemachine": H. G. Wells, The Time Machine, the d2l.ai copy (timemachine.txt),
  one document, used as is (no lower-casing, no character filtering).
  Looked for under `--data-dir DIR` (DIR or DIR/timemachine), `$TORCHLAB_DATA`
  (the same two places), the user cache, and then downloaded from d2l's server
  into the cache, checked by SHA-1 (unless `$TORCHLAB_OFFLINE=1`).
* "tang": the Quan Tang Shi, 57,607 Tang poems in traditional characters, from the
  chinese-poetry project (files poet.tang.*.json). One document per poem: its
  lines joined, ending with "\\n". Not downloaded. `script="simplified"` converts
  it with OpenCC's 't2s' table (the usual choice for readers of modern Chinese).
* anything else: the path of a text file, one document; the language is guessed
  from the share of Han characters.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from torchlab.data.locate import DatasetFiles, cache_root, local_sources, not_in_data_dir
from torchlab.data.text import Splits, guess_language, read_text, split_documents, tokenize
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.logger import tracked

TIMEMACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIMEMACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIMEMACHINE = DatasetFiles(name="timemachine", folder="timemachine", files=("timemachine.txt",))
TANG = DatasetFiles(name="chinese-poetry-tang", folder="quantangshi", files=("poet.tang.*.json",))
TANG_SOURCE = "the npm package chinese-poetry (dist/quantangshi) or github.com/chinese-poetry/chinese-poetry"
SCRIPTS = ("simplified", "traditional")
BUILTIN = ("timemachine", "tang")
VAL_FRACTION = TEST_FRACTION = 0.05  # shares of the tokens: the end of a single text, whole documents of a collection


@dataclass
class Corpus:
    """Documents of raw text and where they came from."""

    name: str
    documents: list[str]
    source: str  # where the text was found, for logs
    language: str  # "en" or "zh"
    skipped: int = 0  # malformed entries left out (tang only)


def load_corpus(name_or_path: str, data_dir: str | None = None, script: str = "simplified",
                encoding: str = "utf-8", offline: bool = False) -> Corpus:
    """A built-in corpus by name ("timemachine", "tang") or a text file by path."""
    if script not in SCRIPTS:
        raise UserError(_("unknown script {script}").format(script=repr(script)), _("choose simplified or traditional"))
    if name_or_path == "timemachine":
        path, source = locate_timemachine(data_dir, offline)
        return Corpus("timemachine", [read_text(path)], source, "en")
    if name_or_path == "tang":
        return load_tang(data_dir, script)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise UserError(_("no corpus {name}: not a built-in and no such file").format(name=repr(name_or_path)),
                        _("use one of {names} or the path of a text file").format(names=', '.join(BUILTIN)))
    text = read_text(path, encoding)
    return Corpus(path.stem, [text], str(path), guess_language(text))


def split_corpus(corpus: str, data_dir: str | None, script: str, encoding: str, level: str,
                 seed: int) -> tuple[Corpus, Splits]:
    """The corpus and its train/val/test token lists, as every `torchlab train lm` run with these settings
    splits it (`seed` shuffles the documents of a multi-document corpus before the cut)."""
    loaded = load_corpus(corpus, data_dir or None, script, encoding)
    docs = [tokenize(doc, level, loaded.language) for doc in loaded.documents]
    return loaded, split_documents(docs, VAL_FRACTION, TEST_FRACTION, seed, shuffle=len(docs) > 1)


def search(spec: DatasetFiles, data_dir: str | None, found: Callable[[Path], Path | None],
           tried: list[str], wanted: str, what: str, hint: str = "") -> tuple[Path, str] | None:
    """Look in ROOT and ROOT/<spec.name> for each local root; note each root in `tried`. An explicit
    `data_dir` is the only root, and not finding `wanted` there is an error (see data/locate.py)."""
    if data_dir:
        root = Path(data_dir).expanduser()
        for folder in (root, root / spec.name):
            if (hit := found(folder)) is not None:
                return hit, f"{hit} (--data-dir)"
        raise not_in_data_dir(root, [root, root / spec.name], wanted, what, hint)
    for label, root in local_sources(spec):
        for folder in (root, root / spec.name):
            if (hit := found(folder)) is not None:
                return hit, f"{hit} ({label})"
        tried.append(f"{label} {root}")
    return None


def _timemachine_in(folder: Path) -> Path | None:
    path = folder / "timemachine.txt"
    return path if path.is_file() else None


def locate_timemachine(data_dir: str | None = None, offline: bool = False) -> tuple[Path, str]:
    """(path of timemachine.txt, description of the source) or UserError listing every place tried."""
    tried: list[str] = []
    if (hit := search(TIMEMACHINE, data_dir, _timemachine_in, tried, "timemachine.txt", "corpus timemachine")) \
            is not None:
        return hit
    cache = cache_root() / "timemachine"
    if (path := _timemachine_in(cache)) is not None:
        return path, f"{path} (user cache)"
    if offline or os.environ.get("TORCHLAB_OFFLINE") == "1":
        tried.append(f"user cache {cache} (download skipped: offline)")
    else:
        try:
            path = download_timemachine(cache)
        except Exception as e:  # any network or server failure: report it with the rest
            tried.append(f"download into {cache} ({type(e).__name__}: {e})")
        else:
            return path, f"{path} (downloaded from {TIMEMACHINE_URL})"
    if not os.environ.get("TORCHLAB_DATA"):
        tried.insert(0, "no --data-dir, no $TORCHLAB_DATA")
    raise UserError(_("corpus timemachine not found; tried: {tried}").format(tried="; ".join(tried)),
                    _("pass --data-dir DIR or set TORCHLAB_DATA to a folder holding timemachine.txt"))


def download_timemachine(folder: Path) -> Path:
    """Fetch timemachine.txt into `folder`, keeping it only if its SHA-1 is d2l's."""
    with urllib.request.urlopen(TIMEMACHINE_URL, timeout=30) as response:
        data = response.read()
    digest = hashlib.sha1(data).hexdigest()
    if digest != TIMEMACHINE_SHA1:
        raise ValueError(f"SHA-1 {digest} of the download is not {TIMEMACHINE_SHA1}; file not kept")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "timemachine.txt"
    partial = path.with_suffix(".part")  # a crash mid-write must not leave a bad file behind
    partial.write_bytes(data)
    partial.replace(path)
    return path


TANG_FILE = re.compile(r"poet\.tang\.(\d+)\.json")


def tang_files(folder: Path) -> list[Path] | None:
    """poet.tang.<n>.json in `folder` or its quantangshi/ (the npm layout), in order of n."""
    for where in (folder, folder / "quantangshi"):
        numbered = [(int(m.group(1)), p) for p in where.glob("poet.tang.*.json") if (m := TANG_FILE.fullmatch(p.name))]
        if numbered:
            return [p for _, p in sorted(numbered)]
    return None


def _tang_folder(folder: Path) -> Path | None:
    files = tang_files(folder)
    return files[0].parent if files else None


def locate_tang(data_dir: str | None = None) -> tuple[list[Path], str]:
    """(the poet.tang.*.json files in order, description of the source) or UserError."""
    tried: list[str] = []
    if (found := search(TANG, data_dir, _tang_folder, tried, "poet.tang.*.json (or quantangshi/)", "corpus tang",
                        f"get it from {TANG_SOURCE}, then point --data-dir at its folder")) is not None:
        folder, source = found
        return tang_files(folder), source
    if not os.environ.get("TORCHLAB_DATA"):
        tried.insert(0, "no --data-dir, no $TORCHLAB_DATA")
    raise UserError(_("corpus tang (poet.tang.*.json) not found; tried: {tried}").format(tried="; ".join(tried)),
                    _("it is not downloaded automatically: get it from {source}, then pass --data-dir")
                    .format(source=TANG_SOURCE))


def poem_text(entry: object) -> str | None:
    """A poem's lines joined and ending with "\\n", or None when the entry is malformed or empty."""
    if not isinstance(entry, dict):
        return None
    lines = entry.get("paragraphs")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        return None
    text = "".join(line.strip() for line in lines).replace("\n", "")  # "\n" ends a poem, nowhere else
    return text + "\n" if text else None


def read_poems(files: list[Path]) -> tuple[list[str], int]:
    """(poems, number of malformed entries skipped) from the JSON files."""
    poems, skipped = [], 0
    for path in tracked(files, "reading poems", "file"):
        try:
            entries = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise UserError(_("{path} is not valid JSON: {error}").format(path=path, error=e),
                                _("re-download the chinese-poetry files")) from None
        if not isinstance(entries, list):
            raise UserError(_("{path} holds no list of poems").format(path=path), _("re-download the chinese-poetry files"))
        for entry in entries:
            text = poem_text(entry)
            if text is None:
                skipped += 1
            else:
                poems.append(text)
    return poems, skipped


def _chunks(documents: list[str], chunk_chars: int) -> Iterator[str]:
    """The documents joined into strings of about `chunk_chars` characters."""
    chunk: list[str] = []
    size = 0
    for doc in documents:
        chunk.append(doc)
        size += len(doc)
        if size >= chunk_chars:
            yield "".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "".join(chunk)


def to_simplified(documents: list[str], chunk_chars: int = 1 << 20) -> list[str]:
    """Traditional -> simplified with OpenCC 't2s', converting ~1 M characters per call.

    Each document ends with its only "\\n", so the documents are joined, converted in
    big chunks (one call per poem would be far slower) and split again at the "\\n"s.
    """
    try:
        import opencc
    except ImportError:
        raise UserError(_("converting to simplified characters needs the opencc package"),
                        _("pip install opencc, or pass --script traditional")) from None
    converter = opencc.OpenCC("t2s")
    out = [line + "\n" for chunk in _chunks(documents, chunk_chars)
           for line in converter.convert(chunk).split("\n")[:-1]]  # each chunk ends with "\n"
    if len(out) != len(documents):
        raise RuntimeError(f"OpenCC changed the number of lines: {len(documents)} -> {len(out)}")
    return out


def load_tang(data_dir: str | None = None, script: str = "simplified") -> Corpus:
    files, source = locate_tang(data_dir)
    poems, skipped = read_poems(files)
    if not poems:
        raise UserError(_("no poems in {count} file(s) at {source}").format(count=len(files), source=source),
                        _("re-download the chinese-poetry files"))
    if script == "simplified":
        poems = to_simplified(poems)
    return Corpus("tang", poems, source, "zh", skipped)
