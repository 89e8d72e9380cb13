"""The `torchlab` sub-commands: one module each, with `add_arguments(parser)` and `run(args) -> int`.

COMMANDS lists them in the order `torchlab --help` shows them: (command, module, help, example). An example
of several lines joins them with "\n  " (the indent `--help` gives the first).
"""


def N_(message: str) -> str:
    """Marks a message for translation without translating it: this module is imported before the language
    is chosen, so cli.build_parser translates the help with `_()` when it builds the parser."""
    return message


COMMANDS = (
    ("train", "train", N_("train a model: an image classifier (fashion-mnist, mnist, cifar10, image-folder) or a "
     "language model (lm), with logs and checkpoints in a run directory"),
     "\n  ".join(("torchlab train fashion-mnist                     # images: the notes' CNN, 3 epochs",
                  "torchlab train fashion-mnist --recipe strong     # >= 93% test accuracy",
                  "torchlab train image-folder --data-dir DIR       # a folder of class sub-folders",
                  "torchlab train lm --corpus timemachine           # a character-level LSTM language model",
                  "torchlab train lm --corpus tang --cell gru --max-steps 100   # Tang poems; a quick dry run",
                  "torchlab train --resume runs/<run> --max-steps 0             # finish a --max-steps run"))),
    ("lr-find", "lrfind", N_("the learning-rate range test: sweep the lr up over a few hundred steps of a run's "
     "training and suggest one (the curve as PNG and TensorBoard); `train --lr find` uses it"),
     "torchlab lr-find fashion-mnist --optimizer sgd   |   torchlab train fashion-mnist --lr find"),
    ("tune", "tune", N_("search settings with Optuna: each trial a training run, poor ones stopped early, the "
     "study kept in a database that several processes or machines can share"),
     "\n  ".join(("torchlab tune fashion-mnist --trials 20 --epochs 3          # lr, weight decay, batch size",
                  "torchlab tune fashion-mnist --trials 30 --param lr=1e-3:0.3:log --param optimizer=sgd,adamw "
                  "--study-dir runs/tune-fm"))),
    ("eval", "evaluate", N_("score a checkpoint on its test set: accuracy, per-class accuracy, confusion matrix"),
     "torchlab eval runs/my-run/best.pt --out confusion.png   |   torchlab eval runs/my-run/best.pt --corruptions"),
    ("predict", "predict", N_("classify image files with a trained checkpoint"),
     "torchlab predict runs/my-run/best.pt shoe.jpg shirt.png --top-k 3 --show seen.png"),
    ("export", "export", N_("save a checkpoint as ONNX or TorchScript that runs without torchlab, checked against "
                            "PyTorch"),
     "torchlab export runs/my-run/best.pt --format onnx   |   torchlab export runs/<lm-run>/best.pt --format torchscript"),
    ("image", "images", N_("open images and show them as array (H, W, C) and tensor (C, H, W); log them to TensorBoard"),
     "torchlab image photo.jpg --logdir runs/images"),
    ("stats", "stats", N_("per-channel mean and standard deviation of a dataset's training images (for Normalize)"),
     "torchlab stats fashion-mnist   |   torchlab stats image-folder --data-dir DIR"),
    ("autograd", "autograd", N_("the notes' autograd example step by step, gradients checked by hand"),
     "torchlab autograd"),
    ("linreg", "linreg", N_("fit y = 3x + 0.8 by gradient descent, by hand or with nn.Linear + optim.SGD"),
     "torchlab linreg --method manual   |   torchlab linreg --method module"),
    ("conv-viz", "convviz", N_("run a convolution and max-pooling over images; see every output channel"),
     "torchlab conv-viz --dataset fashion-mnist --out runs/conv"),
    ("generate", "generate", N_("continue a text with a language model from `torchlab train lm`"),
     "\n  ".join(("torchlab generate runs/<run>/best.pt --prompt '天上的云朵' --tokens 50",
                  "torchlab generate runs/<run>/best.pt --prompt '天上的云朵漂浮在' --next 5   # the likeliest "
                  "next 5"))),
    ("demo", "demo", N_("a local web page to draw, upload or type and watch a trained model think: probabilities, "
                        "saliency, every layer, next tokens and the gates"),
     "torchlab demo runs/<fashion-run>/best.pt runs/<lm-run>/best.pt   # then open the address it prints"),
    ("runs", "runs", N_("list the runs under a folder: task, model, metrics, duration, status, how to resume"),
     "torchlab runs runs --sort test   |   torchlab runs --json"),
    ("report", "report", N_("write one self-contained HTML page about a run: curves, metrics, mistakes or samples"),
     "torchlab report runs/<run> --open"),
    ("tensorboard", "board", N_("start TensorBoard on the runs on a free local port and print its address"),
     "torchlab tensorboard runs"),
    ("doctor", "doctor", N_("what this machine is and what torchlab will do on it: devices, CPU features, measured "
     "rates, the settings auto picks and why, datasets, tools"),
     "torchlab doctor   |   torchlab doctor --json   |   torchlab doctor --measure"),
    ("models", "models", N_("list the models with parameter counts and multiply-adds per image"), "torchlab models"),
    ("data", "data", N_("find and check the datasets (no download with --offline)"),
     "torchlab data fashion-mnist --data-dir ../shared/data"),
)
