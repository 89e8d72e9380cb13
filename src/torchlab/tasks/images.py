"""Placeholder while this command is written (issue 3)."""


def add_arguments(p):
    pass


def run(args) -> int:
    raise NotImplementedError
