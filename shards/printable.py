"""Text read from a dataset's files (a manifest, a lock, a folder name) made safe to print or write into a card.

A manifest is data anyone who can write to a bucket can forge: a model name holding ``ESC [2J`` or ``BEL``
would clear or retitle the terminal of whoever runs ``actlake ls``, and a line break would forge a line of
output. Every printer passes such text through ``printable``.
"""

from __future__ import annotations

import re

#: C0 and C1 control characters, DEL, and the Unicode line separators and bidirectional overrides
#: (text that reorders or splits what is shown)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_KEPT = {"\n", "\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped (``ESC`` -> ``\\x1b``); ``keep_newlines``: line breaks and tabs
    of a multi-line text stay (the caller made them), else they are escaped too (one field, one line)."""
    s = str(text)
    if keep_newlines:
        return _CONTROL.sub(lambda m: m.group(0) if m.group(0) in _KEPT else _escape(m.group(0)), s)
    return _CONTROL.sub(lambda m: _escape(m.group(0)), s)
