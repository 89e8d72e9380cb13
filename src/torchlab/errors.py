"""The one exception type meant for users.

Anything raised as `UserError` is bad input or a bad environment: the CLI prints
it as one line and exits with code 2. Every other exception is a bug in
torchlab and is allowed to show its traceback.
"""

from torchlab.i18n import _


class UserError(Exception):
    """A problem the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return _("{message} ({hint})").format(message=self.message, hint=self.hint) if self.hint else self.message


class Interrupted(Exception):
    """Ctrl-C during training, after a resumable checkpoint was written (exit code 130)."""


class Pruned(Exception):
    """Raised by a training run's `on_epoch` hook (tune.py) to stop a poor run after an epoch: the run
    ends with status "pruned" and its checkpoints kept."""
