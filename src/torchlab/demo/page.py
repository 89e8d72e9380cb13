"""The demo page, laid out with Gradio: one tab per checkpoint, each wired to the functions of views.py.

Every handler turns a UserError into gr.Error, which the page shows as a message (never a traceback) while the
server goes on serving. Gradio is imported here only, so the rest of torchlab never needs it.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry
import gradio as gr  # noqa: E402

from torchlab.demo import views  # noqa: E402
from torchlab.errors import UserError  # noqa: E402
from torchlab.i18n import N_, _  # noqa: E402

# Small pictures are enlarged by the browser: keep each pixel a sharp square rather than a blur.
CSS = "#seen img, #grad-cam img, #input-x-gradient img, #layers img, #kernels img, #picks img " \
      "{ image-rendering: pixelated; }"
PREDICTED = N_("(predicted)")  # the explain-class choice that follows the prediction


def shown_errors(fn):
    """Run a handler; a UserError becomes a message on the page (gr.Error), not a failure of the server. The
    handler keeps fn's signature, from which Gradio learns to pass the event (gr.SelectData)."""
    @functools.wraps(fn)
    def handler(*args):
        try:
            return fn(*args)
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
    return handler


def build(models: list[tuple[str, object]], data_dir: str | None = None) -> gr.Blocks:
    """The page for `models`: [(name, api.Classifier or api.TextModel)], one tab each."""
    with gr.Blocks(title="torchlab demo", analytics_enabled=False) as page:
        gr.Markdown(_("# torchlab: inside a trained model\nDraw, upload or pick an image; type a prompt. "
                      "Everything runs on this machine."))
        with gr.Tabs():
            for name, model in models:
                with gr.Tab(name):
                    if hasattr(model, "classes"):
                        classifier_tab(model, data_dir)
                    else:
                        text_tab(model)
    return page


def look_outputs(look: views.Look) -> list:
    return [look.probs, look.seen, look.grad_cam, look.input_x_gradient, look.note, look.layers, look.kernels]


def classifier_tab(clf, data_dir: str | None) -> None:
    ckpt = clf.checkpoint
    gr.Markdown(_("**{model}** for {task} ({classes} classes), from `{path}`").format(
        model=ckpt["model_name"], task=ckpt["task"], classes=len(clf.classes), path=ckpt["path"]))
    picks, picks_note = views.test_picks(clf, data_dir)
    current = gr.State(None)  # (pixels [C, S, S], note) of the input shown, so a new class re-explains it
    with gr.Row():
        with gr.Column(scale=2):
            inputs = input_panel(picks, picks_note)
            explain = gr.Dropdown([(_(PREDICTED), PREDICTED), *clf.classes], value=PREDICTED,
                                  label=_("explain class"))
        with gr.Column(scale=3):
            outputs = result_panel()
    layers = gr.Gallery(label=_("inside: each convolution's and pooling's output channels"), columns=2,
                        height="auto", elem_id="layers")
    kernels = gr.Gallery(label=_("the convolutions' kernels (grey 0, light positive, dark negative)"), columns=3,
                         height="auto", elem_id="kernels")
    shown = [*outputs, layers, kernels, current]
    wire_classifier(clf, inputs, explain, picks, current, shown)


def input_panel(picks: list[dict], picks_note: str) -> dict:
    with gr.Tab(_("draw")):
        sketch = gr.Sketchpad(type="pil", image_mode="RGBA", canvas_size=(280, 280), label=_("draw an item"))
        classify = gr.Button(_("classify the drawing"), elem_id="classify-drawing")
    with gr.Tab(_("upload")):
        upload = gr.File(file_types=["image"], type="filepath", label=_("upload a photo"), elem_id="upload")
    with gr.Tab(_("test images")):
        gr.Markdown(picks_note)
        gallery = gr.Gallery([(views.enlarged(views.picture(p["pixels"]), 112), p["caption"]) for p in picks],
                             columns=4, height="auto", allow_preview=False, label=_("click one"), elem_id="picks")
    return {"sketch": sketch, "classify": classify, "upload": upload, "gallery": gallery}


def result_panel() -> list:
    probs = gr.Label(num_top_classes=5, label=_("prediction"), elem_id="prediction")
    with gr.Row():
        seen = gr.Image(label=_("what the model saw"), interactive=False, elem_id="seen")
        cam = gr.Image(label=_("Grad-CAM (last convolution)"), interactive=False, elem_id="grad-cam")
        ixg = gr.Image(label=_("input × gradient"), interactive=False, elem_id="input-x-gradient")
    note = gr.Markdown(elem_id="note")
    return [probs, seen, cam, ixg, note]


def wire_classifier(clf, inputs: dict, explain, picks: list[dict], current, shown: list) -> None:
    def target(choice: str) -> int | None:
        return None if choice in (None, PREDICTED) else clf.classes.index(choice)

    def show(pixels, note: str, choice: str) -> list:
        return look_outputs(views.look(clf, pixels, target(choice), note)) + [(pixels, note)]

    def drawn(sketch, choice):
        layers = sketch.get("composite") if isinstance(sketch, dict) else sketch
        if layers is None or layers.convert("L").getextrema() == (255, 255) or not layers.getbbox():
            raise UserError(_("the canvas is empty"), _("draw an item first"))
        return show(*views.from_photo(clf.checkpoint, views.drawing(layers)), choice)

    def uploaded(path, choice):
        if not path:
            raise UserError(_("no file uploaded"), _("choose an image file"))
        return show(*views.from_photo(clf.checkpoint, views.open_upload(path)), choice)

    def picked(choice, evt: gr.SelectData):
        return show(picks[evt.index]["pixels"], picks[evt.index]["note"], choice)

    def again(state, choice):
        if state is None:
            return [gr.skip()] * len(shown)
        return show(*state, choice)

    inputs["classify"].click(shown_errors(drawn), [inputs["sketch"], explain], shown)
    inputs["upload"].upload(shown_errors(uploaded), [inputs["upload"], explain], shown)
    inputs["gallery"].select(shown_errors(picked), [explain], shown)
    explain.change(shown_errors(again), [current, explain], shown)


def text_tab(tm) -> None:
    ckpt = tm.checkpoint
    cfg = ckpt["model_config"]
    gr.Markdown(_("**{cell}** language model, {layers} layer(s) of {hidden} ({impl}), {vocab} tokens, "
                  "from `{path}`").format(cell=cfg.get("cell", "?").upper(), layers=cfg.get("num_layers", "?"),
                                          hidden=cfg.get("hidden_size", "?"), impl=cfg.get("impl", "torch"),
                                          vocab=len(tm.vocab.tokens), path=ckpt["path"]))
    with gr.Row():
        prompt = gr.Textbox(label=_("prompt"), value=default_prompt(tm), elem_id="prompt", scale=4)
        go = gr.Button(_("look"), elem_id="look", scale=1)
    with gr.Row():
        length = gr.Slider(1, 200, value=40, step=1, label=_("tokens to generate"))
        temperature = gr.Slider(0, 2, value=0.8, step=0.05, label=_("temperature (0: always the likeliest)"))
        top_k = gr.Slider(0, 50, value=0, step=1, label=_("top-k (0: all tokens)"))
        seed = gr.Number(0, precision=0, label=_("seed"))
    with gr.Row():
        table = gr.Dataframe(headers=[_("next token"), _("probability")], label=_("the next token"),
                             interactive=False, elem_id="next-tokens")
        text = gr.Textbox(label=_("a sampled continuation"), lines=4, interactive=False, elem_id="continuation")
    gates = gr.Image(label=_("the gates over the prompt"), interactive=False, elem_id="gates")
    gates_note = gr.Markdown(elem_id="gates-note")

    def answer(prompt_text, n, temp, k, s):
        table = views.next_table(tm, prompt_text, 10)  # first: it names an unknown character in the page's words
        picture, note = views.gates_picture(tm, prompt_text)
        return table, views.continuation(tm, prompt_text, int(n), float(temp), int(k), int(s or 0)), picture, note

    for event in (go.click, prompt.submit):
        event(shown_errors(answer), [prompt, length, temperature, top_k, seed], [table, text, gates, gates_note])


def default_prompt(tm) -> str:
    """The notes' question where the model knows its characters, else the Time Machine's first words, else the
    model's commonest tokens: a prompt that works at once."""
    for prompt in ("天上的云朵漂浮在", "The Time Traveller"):
        if all(token in tm.vocab.index for token in (prompt if tm.vocab.level == "char" else prompt.split())):
            return prompt
    return "".join(t for t in tm.vocab.tokens[1:9] if t.isprintable())


def launch(page: gr.Blocks, host: str, port: int) -> str:
    """Serve the page in this process's threads; returns its address. Nothing is shared or fetched."""
    _app, url, _share = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                    share=False, ssr_mode=False, footer_links=[], max_file_size="25mb",
                                    show_error=False, pwa=False, mcp_server=False, css=CSS)
    return url

