"""Keeping secrets out of manifests, run records, log lines, error messages and printed output.

Two kinds of secret are handled, each in one place:

- **Credentials in a URI** (``s3://KEY:SECRET@bucket/x``, ``https://USER:PASSWORD@host/x``): ``split_credentials``
  takes them out (or refuses a URI whose credentials cannot be told from its path), ``redact_uri`` removes them
  from any text. AWS secret keys often hold ``/``, which RFC 3986 does not allow in a URI's userinfo: for object
  stores (``s3://``), whose bucket names never hold ``:`` or ``@``, a first segment with ``:`` or ``@`` is read
  as credentials.
- **Secret-named values** (``secret``, ``token``, ``password``, ``Authorization``, ``aws_secret_access_key``, at any
  depth): ``redact`` replaces them in a config tree, in ``KEY=VALUE`` strings (also nested, as in
  ``--storage-option=secret=X``), in JSON or YAML mapping values (``client_kwargs={"aws_secret_access_key": …}``);
  ``redact_argv`` does the same for a command line, flag values included (``--hf-token X``, ``--hf-token=X``).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from shards.errors import ConfigError

# Whole words of a key name (aws_session_token, hf_token, key, Authorization), not "tokenizer" or "monkey".
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(key|secret|token|password|passwd|passphrase|credentials?|auth|authorization|session|api_?key|"
    r"cookie|signature|connection_string)([_\-.]|$)", re.I)
_SCHEME = re.compile(r"([a-zA-Z][\w+.-]*)://")
#: schemes whose first path segment is a bucket (never holds ':' or '@') rather than a host[:port]
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
#: what ends a URI inside a text (a message, a command line)
_URI_END = re.compile(r"[\s'\"`<>]")
_KEY_VALUE = re.compile(r"^([\w.\-]+)=(.+)$", re.S)  # --storage-option KEY=VALUE (and --flag=KEY=VALUE)
#: a secret-named key with its value inside a mapping literal that did not parse (quoted keys or YAML flow style)
_INLINE = re.compile(r"""(?P<q>["']?)(?P<key>[A-Za-z_][\w.\-]*)(?P=q)(?P<sep>\s*[:=]\s*)"""
                     r"""(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^,;}\]\n]+)""")
MASK = "***"
_MAX_NESTED = 16  #: KEY=VALUE levels looked into (``--flag=KEY=VALUE`` has two)
_AMBIGUOUS = ("the credentials in this URI cannot be told apart from its path (an unencoded '/' or '@' in the "
              "secret, or an '@' in the path). Percent-encode them in KEY:SECRET ('/' as %2F, '@' as %40), or give "
              "the credentials another way: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (--profile), or "
              "--storage-option key=... secret=...")


def is_secret_key(name: str) -> bool:
    """A key or flag name that holds a secret (``hf-token``, ``aws_secret_access_key``; not ``tokenizer``)."""
    return bool(_SECRET_KEY.search(name))


def _userinfo_end(scheme: str, rest: str) -> tuple[int | None, bool]:
    """For ``scheme://rest``: the index in ``rest`` of the ``@`` that ends its userinfo (None: there is none), and
    whether that reading is ambiguous (another ``@`` could end it as well)."""
    if "@" not in rest:
        return None, False
    if scheme.lower() in _BUCKET_SCHEMES:
        cut = rest.find("/") if "/" in rest else len(rest)
        first = rest[:cut]
        later = rest.count("@", cut)
        if "@" in first:  # KEY:SECRET@bucket (an '@' in the secret too: the bucket follows the last one)
            return first.rfind("@"), later > 0  # a later '@' may mean the secret held '/' and '@'
        if ":" in first:  # KEY:SE/CRET@bucket: the secret holds '/'
            return rest.find("@"), later > 1
        return None, False
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:cut]
    if "@" in authority:  # RFC 3986: the userinfo ends at the authority's last '@'
        return authority.rfind("@"), False
    host, colon, port = authority.rpartition(":")
    if colon and host and not port.isdigit() and not authority.endswith("]"):
        # user:pass/word@host: what follows ':' is no port but a password holding '/', '?' or '#'
        return rest.rfind("@"), rest.count("@") > 1
    return None, False


def redact_uri(uri: str) -> str:
    """Drop ``user:password@`` from a URI, or from every URI in a text, before it is stored, logged, printed
    or shipped: the one scrubbing function every URI goes through. Where the userinfo's end is ambiguous,
    everything up to the URI's last ``@`` goes."""
    text, out, pos = str(uri), [], 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue
        start = m.end()
        end = _URI_END.search(text, start)
        rest = text[start:end.start() if end else len(text)]
        at, ambiguous = _userinfo_end(m.group(1), rest)
        if at is None:
            continue
        if ambiguous:
            at = rest.rfind("@")
        out.append(text[pos:start])
        pos = start + at + 1
    out.append(text[pos:])
    return "".join(out)


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """``s3://KEY:SECRET@bucket/x`` -> (``s3://bucket/x``, {"key": KEY, "secret": SECRET});
    ``https://USER:PASSWORD@host/x`` -> (``https://host/x``, {"http_user": USER, "http_password": PASSWORD}) for
    HTTP basic authentication; other URIs lose any ``user:password@`` too (with no options). KEY, SECRET, USER
    and PASSWORD are percent-decoded (``%2F`` for ``/``, ``%40`` for ``@``); a secret holding an unencoded ``/``
    works in an ``s3://`` URI. A URI whose credentials cannot be told from its path is a ConfigError that shows
    neither."""
    text = str(uri)
    m = _SCHEME.match(text)
    if m is None:
        return text, {}
    scheme, rest = m.group(1), text[m.end():]
    at, ambiguous = _userinfo_end(scheme, rest)
    if at is None:
        return text, {}
    if ambiguous:
        raise ConfigError(f"a {scheme}:// URI ending in '@{rest[rest.rfind('@') + 1:]}': {_AMBIGUOUS}")
    userinfo, clean = rest[:at], f"{scheme}://{rest[at + 1:]}"
    user, _, password = (unquote(p) for p in userinfo.partition(":"))
    if scheme.lower() in ("http", "https"):
        return clean, {"http_user": user, "http_password": password}
    if scheme.lower() not in ("s3", "s3a"):
        return clean, {}
    creds = {"key": user} if user else {}
    if password:
        creds["secret"] = password
    return clean, creds


def _set(value: Any) -> bool:
    """A value that holds something (not None, '', {} or [])."""
    return value is not None and not (isinstance(value, (str, dict, list, tuple)) and len(value) == 0)


def _structured(text: str) -> Any:
    """The dict or list a JSON (or YAML flow) mapping/list literal stands for, else None."""
    body = text.strip()
    if not body.startswith(("{", "[")):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        try:
            import yaml

            value = yaml.safe_load(body)
        except Exception:  # noqa: BLE001 - not YAML either: the inline pass below still applies
            return None
    return value if isinstance(value, (dict, list)) else None


def _redact_inline(text: str) -> str:
    """Secret-named keys' values inside a mapping literal that did not parse (a truncated or hand-written one)."""
    if "{" not in text:
        return text
    return _INLINE.sub(lambda m: (f"{m['q']}{m['key']}{m['q']}{m['sep']}{MASK}" if is_secret_key(m["key"])
                                  else m.group(0)), text)


def redact_text(text: str) -> str:
    """One string as it may be stored or shown: ``KEY=***`` for a secret-named KEY (also nested:
    ``--storage-option=token=X``), secret-named values of a JSON/YAML mapping value replaced, credentials out
    of URIs."""
    prefix = ""
    for _ in range(_MAX_NESTED):  # --flag=KEY=VALUE: each KEY in turn (a loop: a text of many '=' is no recursion)
        kv = _KEY_VALUE.match(text)
        if kv is None:
            break
        key, text = kv.groups()
        if is_secret_key(key.lstrip("-")):
            return f"{prefix}{key}={MASK}"
        prefix += f"{key}="
    structured = _structured(text)
    if structured is not None:
        clean = redact(structured)
        return prefix + (text if clean == structured else json.dumps(clean))  # unchanged where nothing was secret
    return prefix + _redact_inline(redact_uri(text))


def redact(obj: Any) -> Any:
    """Copy of a config/dict tree with secret-looking values replaced by ``"***"``, at any depth and in any
    spelling (see ``redact_text``); idempotent, so a stored (redacted) tree compares equal to a fresh one
    redacted."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and _set(v) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def secret_values(obj: Any) -> list[str]:
    """Values of secret-looking keys anywhere in a tree: dict keys, ``KEY=VALUE`` strings and JSON/YAML mapping
    strings (to scrub them from messages and command lines)."""
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_key(k) and not isinstance(v, (dict, list, tuple)):
                out += [str(v)] if v and len(str(v)) >= 4 else []
            else:
                out += secret_values(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in secret_values(v)]
    if isinstance(obj, str):
        for _ in range(_MAX_NESTED):  # as redact_text reads KEY=VALUE texts
            kv = _KEY_VALUE.match(obj)
            if kv is None:
                break
            key, obj = kv.groups()
            if is_secret_key(key.lstrip("-")):
                return [obj] if len(obj) >= 4 else []
        structured = _structured(obj)
        return secret_values(structured) if structured is not None else []
    return []


def redact_argv(argv: list[str]) -> list[str]:
    """A command line's words as they may be stored or shown: the values of secret-named flags (``--hf-token X``,
    ``--hf-token=X``), secret-named ``KEY=VALUE`` options at any depth, JSON values' secrets and URI credentials
    replaced; then any secret value found anywhere is masked wherever else it appears."""
    words, found, after_secret_flag = [], [], False
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if after_secret_flag and not arg.startswith("-"):  # --hf-token VALUE
            words.append(MASK)
            found.append(arg)
        elif arg.startswith("-") and eq and is_secret_key(flag.lstrip("-")):  # --hf-token=VALUE
            words.append(f"{flag}={MASK}")
            found.append(value)
        else:
            words.append(redact_text(arg))
            found += secret_values(arg)
        after_secret_flag = arg.startswith("-") and not eq and is_secret_key(arg.lstrip("-"))
    for secret in sorted({s for s in found if len(s) >= 4}, key=len, reverse=True):
        words = [w.replace(secret, MASK) for w in words]
    return words
