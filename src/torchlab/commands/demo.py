"""`torchlab demo CKPT [CKPT ...]`: a local web page on which a learner draws, uploads or types and watches a
trained model think: probabilities, Grad-CAM, every layer's channels, next tokens and the gates.

The page is Gradio's (the optional extra `torchlab[demo]`), served from this process on loopback by default;
it fetches nothing from outside and sends no analytics. Ctrl-C or SIGTERM closes it.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from torchlab import procs
from torchlab.errors import UserError
from torchlab.i18n import _
from torchlab.logger import say

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(p) -> None:
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help=_("checkpoints (or run folders) of image classifiers or language models, one tab each"))
    p.add_argument("--host", default="127.0.0.1",
                   help=_("address to serve on (default: this machine only; 0.0.0.0 lets your network in)"))
    p.add_argument("--port", type=int, default=0, help=_("port to serve on (default: a free one)"))
    p.add_argument("--data-dir", help=_("where the test images of the checkpoints' datasets are (default: as trained)"))
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"],
                   help=_("where the models run (default: cpu, which a page's single inputs suit)"))


def load_models(paths: list[str], device: str) -> list[tuple[str, object]]:
    """Every checkpoint loaded before anything is served, so a bad one is a one-line error at once."""
    from torchlab import api

    models = []
    for path in paths:
        model = api.load(path, device)
        p = Path(model.checkpoint["path"])
        models.append((f"{p.parent.name}/{p.name}", model))
    return models


def import_page():
    try:
        from torchlab.demo import page
    except ImportError as e:
        raise UserError(_("torchlab demo needs Gradio ({error})").format(error=e),
                        _("pip install 'torchlab[demo]'")) from None
    return page


def run(args) -> int:
    if not 0 <= args.port < 65536:
        raise UserError(_("--port {port}: not a port").format(port=args.port),
                        _("use 1-65535, or leave it out for a free one"))
    models = load_models(args.checkpoints, args.device)
    with tempfile.TemporaryDirectory(prefix="torchlab-demo-") as uploads:
        os.environ.setdefault("GRADIO_TEMP_DIR", uploads)  # what the page receives goes when the page does
        return serve(import_page(), models, args)


def serve(page, models: list, args) -> int:
    """Build and serve the page until Ctrl-C or SIGTERM."""
    from torchlab.commands.board import free_port

    port = args.port or free_port(args.host)
    blocks = page.build(models, args.data_dir)
    with procs.terminate_raises():  # SIGTERM closes the page as Ctrl-C does
        try:
            url = page.launch(blocks, args.host, port)
        except OSError as e:
            raise UserError(_("cannot serve on {host}:{port} ({error})").format(host=args.host, port=port, error=e),
                            _("choose another --port")) from None
        try:
            print(_("demo of {count} model(s): {url}").format(count=len(models), url=url), flush=True)
            if args.host not in LOOPBACK:
                say(_("warning: --host {host}: anyone who can reach this machine can use the page, upload images "
                      "to it and run the models").format(host=args.host))
            say(_("Ctrl-C stops it"))
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            with contextlib.redirect_stdout(io.StringIO()):  # Gradio says "Closing server..." on stdout
                blocks.close()
