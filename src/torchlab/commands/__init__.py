"""The `torchlab` sub-commands: one module each, with `add_arguments(parser)` and `run(args) -> int`.

COMMANDS lists them in the order `torchlab --help` shows them: (command, module, help, example).
"""

COMMANDS = (
    ("train", "train", "train a model: an image classifier or a language model (writes logs and checkpoints to a "
     "run directory)", "torchlab train fashion-mnist --epochs 3   |   torchlab train fashion-mnist --recipe strong"
     "   |   torchlab train lm --corpus tang"),
    ("eval", "evaluate", "score a checkpoint on its test set: accuracy, per-class accuracy, confusion matrix",
     "torchlab eval runs/my-run/best.pt --out confusion.png   |   torchlab eval runs/my-run/best.pt --corruptions"),
    ("predict", "predict", "classify image files with a trained checkpoint",
     "torchlab predict runs/my-run/best.pt shoe.jpg shirt.png --top-k 3 --show seen.png"),
    ("image", "images", "open images and show them as array (H, W, C) and tensor (C, H, W); log them to TensorBoard",
     "torchlab image photo.jpg --logdir runs/images"),
    ("stats", "stats", "per-channel mean and standard deviation of a dataset's training images (for Normalize)",
     "torchlab stats fashion-mnist   |   torchlab stats image-folder --data-dir DIR"),
    ("autograd", "autograd", "the notes' autograd example step by step, gradients checked by hand",
     "torchlab autograd"),
    ("linreg", "linreg", "fit y = 3x + 0.8 by gradient descent, by hand or with nn.Linear + optim.SGD",
     "torchlab linreg --method manual   |   torchlab linreg --method module"),
    ("conv-viz", "convviz", "run a convolution and max-pooling over images; see every output channel",
     "torchlab conv-viz --dataset fashion-mnist --out runs/conv"),
    ("generate", "generate", "continue a text with a language model from `torchlab train lm`",
     "torchlab generate runs/<run>/best.pt --prompt '天上的云朵' --tokens 50   |   ... --next 5"),
    ("runs", "runs", "list the runs under a folder: task, model, metrics, duration, status, how to resume",
     "torchlab runs runs --sort test   |   torchlab runs --json"),
    ("report", "report", "write one self-contained HTML page about a run: curves, metrics, mistakes or samples",
     "torchlab report runs/<run> --open"),
    ("tensorboard", "board", "start TensorBoard on the runs on a free local port and print its address",
     "torchlab tensorboard runs"),
    ("doctor", "doctor", "what this machine is and what torchlab will do on it: devices, CPU features, measured "
     "rates, the settings auto picks and why, datasets, tools",
     "torchlab doctor   |   torchlab doctor --json   |   torchlab doctor --measure"),
    ("models", "models", "list the models with parameter counts and multiply-adds per image", "torchlab models"),
    ("data", "data", "find and check the datasets (no download with --offline)",
     "torchlab data fashion-mnist --data-dir ../shared/data"),
)
