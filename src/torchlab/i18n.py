"""torchlab in the user's language: English, or Chinese (zh) from gettext catalogs in torchlab/locale.

The language is, first to last: `--lang zh|en`, `$TORCHLAB_LANG`, then the locale's own variables in
POSIX order (`$LC_ALL`, `$LC_MESSAGES`, `$LANG`): any zh_* locale gives Chinese. Messages are marked
with `_()` where they are written, with named fields filled in afterwards, so a translation may move
them: `_("epoch {epoch}/{epochs}").format(epoch=e, epochs=n)`. JSON output and the files a run writes
stay in English, whatever the language.

Catalogs: `pybabel extract` writes locale/torchlab.pot from the marked messages, each language keeps
its translations in locale/LANG/LC_MESSAGES/torchlab.po, and `pybabel compile` makes the .mo that
gettext reads (tests/test_i18n.py checks that every message has a translation and that the .mo is
up to date).
"""

from __future__ import annotations

import gettext
import os
import unicodedata
from pathlib import Path

DOMAIN = "torchlab"
LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES = ("en", "zh")
_catalog: gettext.NullTranslations = gettext.NullTranslations()
current = "en"


def from_environment(env=os.environ) -> str:
    """The language the environment asks for: $TORCHLAB_LANG, else the first locale variable set."""
    if env.get("TORCHLAB_LANG"):
        return env["TORCHLAB_LANG"]
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if env.get(name):  # POSIX: the first one set decides, even when it says C or en
            return "zh" if env[name].lower().startswith("zh") else "en"
    return "en"


def use(language: str) -> str:
    """Speak `language` ("zh" or "en"; a locale name such as zh_CN.UTF-8 counts as zh) from now on."""
    global _catalog, current
    current = "zh" if language.lower().startswith("zh") else "en"
    _catalog = gettext.translation(DOMAIN, LOCALE_DIR, languages=[current], fallback=True) if current != "en" \
        else gettext.NullTranslations()
    return current


def _(message: str) -> str:
    """`message` in the current language (unchanged where there is no translation)."""
    return _catalog.gettext(message)


def language_in(argv: list[str]) -> str | None:
    """The value of `--lang` in a command line, read before the parser is built (its help is translated)."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return None


def N_(message: str) -> str:
    """Marks `message` for `pybabel extract` without translating it, where it is written before the language is
    chosen (a setting's help, a table of commands); `_()` translates it where it is shown."""
    return message


class speaking:
    """`with speaking("en"): ...` builds messages in another language for a while (what a run writes to its
    files stays English while the terminal speaks Chinese), then returns to the language before."""

    def __init__(self, language: str):
        self.language = language

    def __enter__(self):
        self.before = (_catalog, current)
        use(self.language)
        return self

    def __exit__(self, *exc):
        global _catalog, current
        _catalog, current = self.before
        return False


def both(message: str, **fields) -> tuple[str, str]:
    """`message` filled in twice: in English (for JSON and files) and in the current language (for the terminal)."""
    return message.format(**fields), _(message).format(**fields)


def shown_width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character (East Asian wide or full-width) takes two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def pad(text: str, width: int, right: bool = False) -> str:
    """`text` padded with spaces to `width` terminal columns, on the right, or on the left when `right`
    (numbers line up on the right). Translated headers change width with the language, so tables pad by
    columns shown, not by len()."""
    space = " " * max(0, width - shown_width(text))
    return space + text if right else text + space
