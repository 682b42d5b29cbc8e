"""A version pinned at the end of a dataset URI, ``URI@vN``: one spelling for every command and for
``open_dataset``."""

from __future__ import annotations

import re

#: a version pinned at the end of a URI: ``runs/ds@v3``, ``s3://bucket/acts@v12``
_PIN = re.compile(r"@v([0-9]+)$")
SYNTAX = "URI@vN"  #: how every input is pinned (README "Versions", docs/architecture.md)


def split_pin(text: str) -> tuple[str, int | None]:
    """``URI@vN`` -> (URI, N); a text without a trailing ``@vN`` is a URI of the latest version (None).

    Only the end of the text can pin, and only after a path: ``https://user:pass@v3`` is a host named v3, not a
    version (credentials and hosts hold ``@`` too). ``@vN`` alone (no URI) asks for version N of the command's
    default dataset (an SAE's training data). A path that itself ends in ``@vN`` is written with a trailing ``/``.
    """
    m = _PIN.search(text)
    if m is None:
        return text, None
    uri = text[:m.start()]
    _scheme, sep, rest = uri.partition("://")
    if sep and "/" not in rest:  # scheme://authority@vN: the authority holds the '@'
        return text, None
    return uri, int(m.group(1))
