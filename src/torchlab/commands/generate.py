"""`torchlab generate CKPT --prompt TEXT`: continue a text with a trained language model.

The prompt is tokenised as the training text was and run through the model
to build up its hidden state; then one token at a time is chosen from the
predicted distribution and fed back in (models/sampling.py). `--temperature 0`
always takes the most likely token (greedy); otherwise logits are divided by
the temperature (below 1: safer, above 1: more surprising) and, with
`--top-k K`, only the K most likely tokens are kept before sampling. `--next K`
answers the notes' question directly: the K most likely next tokens and their
probabilities. `--gates OUT.png` also draws what an LSTM's or GRU's gates do
over the prompt (models/gates.py, models/gate_plot.py), one panel per layer and
gate; every problem with it is reported before anything is generated.
"""

from __future__ import annotations

import json
from pathlib import Path

from torchlab.checks import Bounded
from torchlab.data.text import UNK
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.logger import say


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help=_("a .pt file (or run directory) from `torchlab train lm`"))
    p.add_argument("--prompt", required=True, help=_("the text to continue"))
    p.add_argument("--tokens", type=int, default=50, action=Bounded, lo=1, help=_("how many tokens to add (default 50)"))
    p.add_argument("--temperature", type=float, default=0.8, action=Bounded, lo=0,
                   help=_("0: always the most likely token (greedy); higher: more varied (default 0.8)"))
    p.add_argument("--top-k", type=int, default=0, action=Bounded, lo=0, help=_("sample only among the K most likely tokens (0: all)"))
    p.add_argument("--seed", type=int, default=0, help=_("seed for sampling: the same seed gives the same text"))
    p.add_argument("--next", type=int, metavar="K", action=Bounded, lo=1,
                   help=_("instead of generating, list the K most likely next tokens with their probabilities"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--gates", metavar="OUT.png",
                   help=_("also save a heat map of the gates (LSTM, GRU) over the prompt, per layer and gate"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))


def run(args) -> int:
    from torchlab import api

    model = api.load(args.checkpoint, args.device)
    if not isinstance(model, api.TextModel):
        model = api.TextModel(model.checkpoint)  # raises the one-line error naming the kind of checkpoint
    figure = gate_figure_for(model, args.prompt, args.gates) if args.gates else None
    result = model.next_tokens(args.prompt, args.next) if args.next is not None else \
        model.generate(args.prompt, args.tokens, args.temperature, args.top_k, args.seed)
    if figure is not None:
        save_png(figure, args.gates)
        result["gates"] = args.gates
    if result["unknown"]:
        say(_("warning: not in the vocabulary, read as {unk}: {tokens}")
            .format(unk=UNK, tokens=" ".join(repr(t) for t in result["unknown"][:20])))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    if args.next is not None:
        print(_("after {prompt}, the most likely next tokens:").format(prompt=repr(args.prompt)))
        print("\n".join(f"  {t['token']!r:<12} {t['prob']:.2%}" for t in result["next"]))
    else:
        print(result["text"])
    if figure is not None:
        print(_("gates saved to {path}").format(path=args.gates))
    return 0


def gate_figure_for(model, prompt: str, out: str):
    """The heat map `--gates OUT` asks for, after every check that can refuse it: the path, the kind of cell,
    the prompt. Done before generating, so that a refusal leaves no half-printed result."""
    from torchlab.models.gate_plot import gate_figure

    check_png_target(out)
    if model.model.config.cell == "rnn":
        raise UserError(_("--gates: a plain RNN has no gates"),
                        _("train one with `torchlab train lm --cell lstm` or `--cell gru`, or leave out --gates"))
    return gate_figure(model.gates(prompt))


def check_png_target(out: str) -> None:
    """A new .png file in an existing folder; an existing file is never replaced (generate has no --force)."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise UserError(_("--gates {path}: not a .png file name").format(path=out), _("e.g. --gates gates.png"))
    if path.exists():
        raise UserError(_("--gates {path}: exists already").format(path=out),
                        _("choose another name, or delete it first"))
    if not path.parent.is_dir():
        raise UserError(_("--gates {path}: folder {folder} does not exist").format(path=out, folder=path.parent),
                        _("create it first, or choose another path"))


def save_png(figure, out: str) -> None:
    try:
        figure.savefig(out, format="png")
    except OSError as e:  # no permission, a full disk
        raise UserError(_("--gates {path}: cannot be written ({error})").format(path=out, error=e.strerror or e),
                        _("choose another path")) from None
