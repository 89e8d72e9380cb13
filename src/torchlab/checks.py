"""Numbers within bounds: one check for the settings of a run (config.py) and the flags of every command.

A command declares a flag's bounds where it defines the flag:

    p.add_argument("--tokens", type=int, default=50, action=Bounded, lo=1)

and a value outside them is a one-line error naming the flag, before anything runs.
"""

from __future__ import annotations

import argparse
import math

from torchlab.errors import UserError
from torchlab.i18n import _


def finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float (`lr = 1e400` written out as digits)
        return False


def violation(value, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> str | None:
    """What `value` must be, when it is not finite or lies outside [lo, hi] (an open end excludes the bound);
    None when it is fine. NaN compares False with every bound, so it is caught first."""
    if not finite(value):
        return _("a finite number")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if not (below or above):
        return None
    if hi is None:
        return (_("greater than {lo}").format(lo=lo) if lo_open else _("0 or more") if lo == 0
                else _("at least {lo}").format(lo=lo))
    if lo is None:
        return _("below {hi}").format(hi=hi) if hi_open else _("at most {hi}").format(hi=hi)
    return (_("in [{lo}, {hi})").format(lo=lo, hi=hi) if hi_open
            else _("between {lo} and {hi}").format(lo=lo, hi=hi))


class Bounded(argparse.Action):
    """An argparse action that refuses a number outside [lo, hi] (see `violation`) with a one-line error."""

    def __init__(self, option_strings, dest, lo=None, hi=None, lo_open=False, hi_open=False, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.bounds = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}

    def __call__(self, parser, namespace, value, option_string=None):
        need = violation(value, **self.bounds)
        if need is not None:
            raise UserError(_("{flag} {value}: must be {need}").format(flag=option_string, value=value, need=need),
                            _("see `{prog} --help`").format(prog=parser.prog))
        setattr(namespace, self.dest, value)
