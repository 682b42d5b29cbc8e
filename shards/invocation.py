"""The command line that is writing (recorded in the manifest for the dataset card, secrets removed)."""

from __future__ import annotations

import shlex

from shards.secrets import redact_argv

_COMMAND_LINE = ""


def set_command_line(argv: list[str], program: str = "actlake") -> None:
    """Remember ``program argv`` for the writers of this process, with every secret taken out first
    (``shards.secrets.redact_argv``: secret-named flags and options in any spelling, JSON values, URI
    credentials): the manifest, its log entries and checkpoints are immutable, so what is recorded must be clean."""
    global _COMMAND_LINE
    _COMMAND_LINE = shlex.join([program, *redact_argv(argv)])


def command_line() -> str:
    """The command line set by ``set_command_line`` ('' when none: a dataset written from Python)."""
    return _COMMAND_LINE


def clean_command_line(text: str) -> str:
    """A recorded command line with every secret taken out again (one recorded before a spelling was known to
    carry secrets): ``redact_argv`` over its words."""
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes: clean it word by word as whitespace splits it
        words = text.split()
    return shlex.join(redact_argv(words))
