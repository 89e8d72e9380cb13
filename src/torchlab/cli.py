"""The `torchlab` command: the parser assembled from commands/, and the one place errors become exit codes.

`main(argv)` returns the exit code instead of exiting, so tests call it directly.
A `UserError` prints one line and returns 2; Ctrl-C returns 130; anything
else is a bug and keeps its traceback. `--debug` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import traceback

from torchlab import __version__, i18n, logger, runinfo
from torchlab.commands import COMMANDS
from torchlab.errors import Interrupted, UserError
from torchlab.i18n import N_, _

# argparse's own words in `--help` and in its commonest errors, which it looks up with its module's `_`: main()
# points that at torchlab's catalog, so they follow --lang too (any other argparse text stays English).
ARGPARSE_WORDS = (N_("usage: "), N_("options"), N_("positional arguments"), N_("show this help message and exit"),
                  N_("show program's version number and exit"), N_("argument %(argument_name)s: %(message)s"),
                  N_("invalid choice: %(value)r (choose from %(choices)s)"), N_("invalid %(type)s value: %(value)r"),
                  N_("unrecognized arguments: %s"), N_("the following arguments are required: %s"),
                  N_("expected one argument"))


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError: one line, exit 2, like every other bad input."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}", _("see `{prog} --help`").format(prog=self.prog))


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_("show tracebacks for errors"))
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help=_("no progress output, results only"))
    p.add_argument("--lang", choices=i18n.LANGUAGES, default=argparse.SUPPRESS,
                   help=_("language of the messages: zh (Chinese) or en (English); default: $TORCHLAB_LANG, "
                          "else the locale ($LC_ALL, $LC_MESSAGES, $LANG)"))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="torchlab",
                    description=_("A small deep-learning workbench built from a learner's PyTorch notes."))
    parser.add_argument("--version", action="version", version=f"torchlab {__version__}")
    add_common(parser)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command, module_name, help, example in COMMANDS:
        module = importlib.import_module(f"torchlab.commands.{module_name}")
        help = _(help)
        p = subs.add_parser(command, help=help, description=help + "\n\n" + _("example:") + "\n  " + example,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(p)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def rank_tag() -> str:
    """" (rank N)" in messages of a process started by torchrun, so a failure names its process."""
    from torchlab.distributed import from_env

    world = from_env()
    return f" (rank {world.rank})" if world.enabled else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    i18n.use(i18n.language_in(argv) or i18n.from_environment())  # always: no language is left from a last call
    argparse._ = _
    debug = "--debug" in argv
    logger.QUIET = "--quiet" in argv
    runinfo.COMMAND = "torchlab " + shlex.join(argv)  # kept in each run's summary.json
    try:
        args = build_parser().parse_args(argv)
        if not hasattr(args, "func"):
            build_parser().print_help()
            return 2
        return args.func(args)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(_("torchlab{rank}: error: {message}").format(rank=rank_tag(), message=e), file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"torchlab{rank_tag()}: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(_("torchlab: interrupted"), file=sys.stderr)
        return 130
