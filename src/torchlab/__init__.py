"""torchlab: a small deep-learning workbench built from a learner's PyTorch notes."""

__version__ = "0.1.0"
