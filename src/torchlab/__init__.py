"""torchlab: a small deep-learning workbench built from a learner's PyTorch notes.

    import torchlab
    run = torchlab.train("fashion-mnist", epochs=1)   # a Run: run_dir, config, history, best, test, model
    model = torchlab.load(run.run_dir)                # .predict(images), or .generate(prompt) for text
    torchlab.evaluate(run.run_dir)                    # the metrics `torchlab eval CKPT --json` prints

See torchlab/api.py. The names load on first use, so `import torchlab` stays quick.
"""

__version__ = "0.1.0"
__all__ = ["train", "load", "evaluate", "Run", "Classifier", "TextModel", "UserError"]


def __getattr__(name: str):
    if name in __all__:
        from torchlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'torchlab' has no attribute {name!r}")
