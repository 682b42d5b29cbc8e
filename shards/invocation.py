"""The command line that is writing (recorded in the manifest for the dataset card, secrets removed)."""

from __future__ import annotations

import shlex

from shards.secrets import is_secret_key, redact

_COMMAND_LINE = ""


def set_command_line(argv: list[str], program: str = "actlake") -> None:
    """Remember ``program argv`` (flag values and URIs holding credentials are redacted) for the writers of this
    process."""
    global _COMMAND_LINE
    words, after_secret_flag = [], False
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if after_secret_flag and not arg.startswith("--"):
            words.append("***")
        elif arg.startswith("--") and eq and is_secret_key(flag.lstrip("-")):
            words.append(f"{flag}=***")  # --hf-token=abc
        else:
            words.append(redact(arg))
        after_secret_flag = arg.startswith("--") and not eq and is_secret_key(arg.lstrip("-"))
    _COMMAND_LINE = shlex.join([program, *words])


def command_line() -> str:
    """The command line set by ``set_command_line`` ('' when none: a dataset written from Python)."""
    return _COMMAND_LINE
