"""Keeping secrets out of manifests, run records, log lines and error messages."""

from __future__ import annotations

import re
from typing import Any

# Whole words of a key name (aws_session_token, hf_token, key, Authorization), not "tokenizer" or "monkey".
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(key|secret|token|password|passwd|credentials?|auth|authorization|session|api_?key)([_\-.]|$)",
    re.I)
_USERINFO = re.compile(r"([a-zA-Z][\w+.-]*://)[^/@\s'\"]*@")  # anywhere in a text: URIs inside messages too
_S3_USERINFO = re.compile(r"^(s3a?)://([^/@]*)@(.*)$", re.S)
_HTTP_USERINFO = re.compile(r"^(https?)://([^/@]*)@(.*)$", re.S)
_KEY_VALUE = re.compile(r"^([\w.\-]+)=(.+)$", re.S)  # --storage-option KEY=VALUE


def is_secret_key(name: str) -> bool:
    """A key or flag name that holds a secret (``hf-token``, ``aws_secret_access_key``; not ``tokenizer``)."""
    return bool(_SECRET_KEY.search(name))


def redact_uri(uri: str) -> str:
    """Drop ``user:password@`` from a URI, or from every URI in a text, before it is stored, logged, printed
    or shipped: the one scrubbing function every URI goes through."""
    return _USERINFO.sub(r"\1", str(uri))


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``s3://KEY:SECRET@bucket/x`` -> (``s3://bucket/x``, {"key": KEY, "secret": SECRET});
    ``https://USER:PASSWORD@host/x`` -> (``https://host/x``, {"http_user": USER, "http_password": PASSWORD}) for
    HTTP basic authentication; other URIs lose any ``user:password@`` too (with no options)."""
    h = _HTTP_USERINFO.match(str(uri))
    if h is not None:
        proto, userinfo, rest = h.groups()
        user, _, password = userinfo.partition(":")
        return f"{proto}://{rest}", {"http_user": user, "http_password": password}
    m = _S3_USERINFO.match(str(uri))
    if m is None:
        return redact_uri(uri) if _USERINFO.match(str(uri)) else uri, {}
    proto, userinfo, rest = m.groups()
    user, _, password = userinfo.partition(":")
    creds = {"key": user} if user else {}
    if password:
        creds["secret"] = password
    return f"{proto}://{rest}", creds


def _set(value: Any) -> bool:
    """A value that holds something (not None, '', {} or [])."""
    return value is not None and not (isinstance(value, (str, dict, list, tuple)) and len(value) == 0)


def redact(obj: Any) -> Any:
    """Copy of a config/dict tree with secret-looking values replaced by ``"***"``."""
    if isinstance(obj, dict):
        return {k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and _set(v) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        kv = _KEY_VALUE.match(obj)
        return f"{kv.group(1)}=***" if kv and _SECRET_KEY.search(kv.group(1)) else redact_uri(obj)
    return obj


def secret_values(obj: Any) -> list[str]:
    """Values of secret-looking keys anywhere in a dict tree (to scrub them from messages)."""
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple)):
                out += secret_values(v)
            elif isinstance(k, str) and _SECRET_KEY.search(k) and v and len(str(v)) >= 4:
                out.append(str(v))
        return out
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in secret_values(v)]
    return []
