"""Keeping secrets out of manifests, run records, log lines, error messages and printed output.

Two kinds of secret are handled, each in one place:

- **Credentials in a URI** (``s3://KEY:SECRET@bucket/x``, ``https://USER:PASSWORD@host/x``): ``split_credentials``
  takes them out (or refuses a URI whose credentials cannot be told from its path), ``redact_uri`` removes them
  from any text. AWS secret keys often hold ``/``, which RFC 3986 does not allow in a URI's userinfo: for object
  stores (``s3://``), whose bucket names never hold ``:`` or ``@``, a first segment with ``:`` or ``@`` is read
  as credentials. The values of a URI's secret-named query parameters (a presigned URL's ``X-Amz-Signature``,
  ``X-Amz-Credential`` and ``X-Amz-Security-Token``, a SAS ``sig``, ``?token=``) are masked by ``redact_uri`` too.
- **Secret-named values** (``secret``, ``token``, ``password``, ``Authorization``, ``aws_secret_access_key``, at any
  depth): ``redact`` replaces them in a config tree, in ``KEY=VALUE`` strings (also nested, as in
  ``--storage-option=secret=X``), in JSON or YAML mapping values (``client_kwargs={"aws_secret_access_key": …}``);
  ``redact_argv`` does the same for a command line, flag values included (``--hf-token X``, ``--hf-token=X``), and
  in ``NAME=VALUE`` inside any free text (``export AWS_SECRET_ACCESS_KEY=X`` in a value or a citation). A name is
  secret by its words, in any spelling: ``aws_secret_access_key``, ``SSECustomerKey``, ``apitoken``.
  ``redact_message`` cleans an error message the same way (also ``secret:X``), and masks the command line's secrets.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote

from shards.errors import ConfigError

# A key name's words: split at '_', '-', '.', other punctuation and camelCase (SSECustomerKey: sse customer key)
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# A whole word of a key name that names a secret (aws_session_token, hf_token, key, Authorization, secretAccessKey,
# apitoken, passwords), not "tokenizer", "monkey" or "max_tokens"; a word may be a run of words (APIKEY, apitoken).
_SECRET_WORD = re.compile(
    r"(api|access|auth|secret|private|session|refresh|client|bearer|id|sas|master|account|signing|encryption|sse|app|"
    r"user|admin|oauth|hf|aws|db)?(key|secrets?|token|passwords?|passwd|pwd|passphrases?|credentials?|auth|"
    r"authorization|session|cookies?|signature|sig|jwt)")
#: key names whose words name a secret only together (connection_string; fully normalised: no '_', '-', case)
_SECRET_JOINED = ("connectionstring",)
_SCHEME = re.compile(r"([a-zA-Z][\w+.-]*)://")
#: schemes whose first path segment is a bucket (never holds ':' or '@') rather than a host[:port]
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
#: what ends a URI inside a text (a message, a command line)
_URI_END = re.compile(r"[\s'\"`<>]")
_KEY_VALUE = re.compile(r"^([\w.\-]+)=(.+)$", re.S)  # --storage-option KEY=VALUE (and --flag=KEY=VALUE)
#: a ``NAME=`` (or ``NAME:``) inside a free text, and the value that follows it (to the next space or quote)
_ASSIGNMENT = re.compile(r"(?<![\w.\-])(?P<key>-{0,2}[A-Za-z_][\w.\-]*)(?P<sep>[=:])(?=\S)")
_FREE_VALUE = re.compile(r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s'"`]+""")
#: what a help text or message writes where a value goes (``write KEY=VALUE``, ``key=...``): no secret to mask
_PLACEHOLDERS = frozenset({"value", "values", "secret", "password", "token", "key", "x", "...", "…", "***"})
#: a secret-named key with its value inside a mapping literal that did not parse (quoted keys or YAML flow style)
_INLINE = re.compile(r"""(?P<q>["']?)(?P<key>[A-Za-z_][\w.\-]*)(?P=q)(?P<sep>\s*[:=]\s*)"""
                     r"""(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^,;}\]\n]+)""")
MASK = "***"
_MAX_NESTED = 16  #: KEY=VALUE levels looked into (``--flag=KEY=VALUE`` has two)
_AMBIGUOUS = ("the credentials in this URI cannot be told apart from its path (an unencoded '/' or '@' in the "
              "secret, or an '@' in the path). Percent-encode them in KEY:SECRET ('/' as %2F, '@' as %40), or give "
              "the credentials another way: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile (--profile), or "
              "--storage-option key=... secret=...")


def key_words(name: str) -> list[str]:
    """A key or flag name's words, lower-case: ``SSECustomerKey`` -> sse, customer, key; ``--hf-token`` -> hf,
    token; ``X-Amz-Security-Token`` -> x, amz, security, token."""
    return [w.lower() for w in _WORD.findall(str(name))]


def is_secret_key(name: str) -> bool:
    """A key or flag name that holds a secret, in any spelling (``hf-token``, ``aws_secret_access_key``,
    ``SSECustomerKey``, ``secretAccessKey``, ``apitoken``, ``X-Amz-Signature``; not ``tokenizer``)."""
    words = key_words(name)
    joined = "".join(words)
    return any(_SECRET_WORD.fullmatch(w) for w in words) or any(j in joined for j in _SECRET_JOINED)


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


def _redact_query(rest: str) -> str:
    """``host/path?a=1&token=X#f`` -> ``host/path?a=1&token=***#f``: the values of secret-named query parameters
    (``token``, ``sig``, ``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``apiKey``) masked."""
    q = rest.find("?")
    if q < 0:
        return rest
    end = rest.find("#", q)
    end = len(rest) if end < 0 else end
    params = []
    for param in rest[q + 1:end].split("&"):
        name, eq, value = param.partition("=")
        secret = eq and value and value != MASK and is_secret_key(unquote(name.replace("+", " ")))
        params.append(f"{name}={MASK}" if secret else f"{name}{eq}{_redact_query(value)}")  # ?next=URL?token=
    return f"{rest[:q + 1]}{'&'.join(params)}{rest[end:]}"


def redact_uri(uri: str) -> str:
    """Drop ``user:password@`` from a URI, or from every URI in a text, and mask the values of its secret-named
    query parameters (a presigned URL's ``X-Amz-Signature``, ``?token=``), before it is stored, logged, printed
    or shipped: the one scrubbing function every URI goes through. Where the userinfo's end is ambiguous,
    everything up to the URI's last ``@`` goes."""
    text, out, pos = str(uri), [], 0
    for m in _SCHEME.finditer(text):
        if m.start() < pos:
            continue
        start = m.end()
        end = _URI_END.search(text, start)
        stop = end.start() if end else len(text)
        rest = text[start:stop]
        at, ambiguous = _userinfo_end(m.group(1), rest)
        if at is not None:
            rest = rest[(rest.rfind("@") if ambiguous else at) + 1:]
        out.append(text[pos:start] + _redact_query(rest))
        pos = stop
    out.append(text[pos:])
    return "".join(out)


def _uri_spans(text: str) -> list[tuple[int, int]]:
    """Where the URIs of a text are (``redact_uri`` cleans them; the free-text pass leaves them alone)."""
    spans: list[tuple[int, int]] = []
    for m in _SCHEME.finditer(text):
        if spans and m.start() < spans[-1][1]:
            continue
        end = _URI_END.search(text, m.end())
        spans.append((m.start(), end.start() if end else len(text)))
    return spans


def _redact_assignments(text: str, separators: str = "=") -> str:
    """``NAME=VALUE`` pairs of a secret-looking NAME anywhere in a free text (``export AWS_SECRET_ACCESS_KEY=X`` in
    a value, a citation or a message) with VALUE masked; ``separators`` ``=:`` also masks ``secret:X``. URIs are
    left to ``redact_uri``."""
    if not any(c in text for c in separators):
        return text
    spans = _uri_spans(text)
    out, pos = [], 0
    for m in _ASSIGNMENT.finditer(text):
        if (m["sep"] not in separators or m.start() < pos or any(a <= m.start() < b for a, b in spans)
                or not is_secret_key(m["key"])):
            continue
        value = _FREE_VALUE.match(text, m.end())
        if value is None or _placeholder(value.group(0)):
            continue
        out.append(text[pos:m.end()] + MASK)
        pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _placeholder(value: str) -> bool:
    """A value that stands for one in a message (``VALUE``, ``...``, ``SECRET@``), or one already masked."""
    return value.strip("'\"").rstrip("@,;:.)]}`").lower() in _PLACEHOLDERS or value.strip("'\"") in ("...", "…")


def _assigned_values(text: str) -> list[str]:
    """The values ``_redact_assignments`` masks in ``text`` (to mask them wherever else they appear)."""
    spans = _uri_spans(text)
    found = []
    for m in _ASSIGNMENT.finditer(text):
        if m["sep"] == "=" and is_secret_key(m["key"]) and not any(a <= m.start() < b for a, b in spans):
            value = _FREE_VALUE.match(text, m.end())
            found += [value.group(0).strip("'\"")] if value is not None and not _placeholder(value.group(0)) else []
    return found


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
    return prefix + _redact_assignments(_redact_inline(redact_uri(text)))


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
        return secret_values(structured) if structured is not None else _assigned_values(obj)
    return []


def _scan_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``redact_argv``'s words, and the secret values found in ``argv`` (before they are masked elsewhere)."""
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
    return words, sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line's words as they may be stored or shown: the values of secret-named flags (``--hf-token X``,
    ``--hf-token=X``), secret-named ``KEY=VALUE`` options at any depth, JSON values' secrets and URI credentials
    replaced; then any secret value found anywhere is masked wherever else it appears."""
    words, found = _scan_argv(argv)
    for secret in found:
        words = [w.replace(secret, MASK) for w in words]
    return words


def redact_message(text: str, argv: list[str] | tuple[str, ...] = ()) -> str:
    """An error message as it may be printed (argparse's own errors and ours echo what was typed): URI
    credentials and secret query parameters out, ``NAME=VALUE`` and ``NAME:VALUE`` of a secret-looking NAME
    masked, and every secret value found in the command line ``argv`` masked wherever it appears."""
    clean = _redact_assignments(_redact_inline(redact_uri(str(text))), "=:")
    for secret in _scan_argv(list(argv))[1]:
        clean = clean.replace(secret, MASK)
    return clean
