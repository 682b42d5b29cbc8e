"""Whether two URIs name the same place, or one lies inside the other, whatever their spelling.

A string comparison of URIs is not enough to keep a command from writing onto what it reads: ``SRC/.``,
``SRC/../name``, ``file://SRC``, a trailing slash or a symlink all name the source under another spelling, and
``actlake copy SRC SRC/. --overwrite`` would then delete what it copies. Here a local path is resolved with
``realpath`` (``file://`` stripped, ``.``/``..`` and symlinks resolved); an object-store key is normalised
(``.``/``..`` resolved, repeated and trailing slashes dropped) and compared within the same store: the same
protocol and, for S3, the same endpoint in any spelling (``normalise_endpoint``: ``localhost`` or ``127.0.0.1``,
a trailing slash, a default port, the scheme's case).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import posixpath
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from shards.layout import MANIFEST
from shards.secrets import redact_uri
from shards.storage import Storage

Overlap = Literal["same", "inside", "contains"]


@dataclass(frozen=True)
class Location:
    """A dataset root as a comparable value: which store, and the normalised path in it."""

    store: str  #: "local", "s3 at <endpoint>", or an fsspec protocol
    path: str  #: an absolute path with symlinks resolved (local), else "bucket/key" normalised

    def overlap(self, other: Location) -> Overlap | None:
        """``same``: one place; ``inside``: this lies under ``other``; ``contains``: ``other`` lies under this."""
        if self.store != other.store:
            return None
        if self.path == other.path:
            return "same"
        if self.path.startswith(other.path.rstrip("/") + "/"):
            return "inside"
        if other.path.startswith(self.path.rstrip("/") + "/"):
            return "contains"
        return None


def _s3_endpoint(options: dict) -> str:
    """The endpoint an S3 client of these options talks to (as s3fs/botocore choose it), normalised."""
    endpoint = (options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "aws")
    return normalise_endpoint(str(endpoint))


#: AWS's own S3 endpoints (any region, dual-stack, FIPS): one namespace of buckets, the default endpoint's
_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_endpoint(endpoint: str) -> str:
    """An endpoint URL as a comparable value, whatever its spelling: scheme and host lower-case, the scheme's
    default port written out, a trailing slash dropped, a host name resolved to its addresses (``localhost`` and
    ``127.0.0.1`` are one server; any loopback or own address of this machine is ``this-machine``), and every
    ``*.amazonaws.com`` endpoint ``aws`` (AWS bucket names are global). Credentials are never part of it."""
    text = endpoint.strip()
    if text.lower() == "aws":
        return "aws"
    try:
        parts = urlsplit(text if "://" in text else f"https://{text}")  # botocore reads a bare host as https
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower().rstrip(".")
    except ValueError:  # no URL (an unclosed '[' of an IPv6 address): compared as written; the client refuses it
        return text.rstrip("/").lower()
    if _AWS_HOST.search(host):
        return "aws"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is no number: compared as written
        port = parts.netloc.rpartition(":")[2].lower()
    path = posixpath.normpath("/" + parts.path.strip("/")) if parts.path.strip("/") else ""
    return f"{scheme}://{_host_identity(host)}:{port}{path}"


@functools.lru_cache(maxsize=64)
def _host_identity(host: str) -> str:
    """One name for every spelling of a host: ``this-machine`` for a loopback, unspecified or own address (or a
    name resolving to one), else its sorted resolved addresses; the name itself where it does not resolve."""
    try:
        addresses = {info[4][0].split("%", 1)[0] for info in socket.getaddrinfo(host.strip("[]"), None)}
    except (OSError, UnicodeError, ValueError):
        return host
    if any(_this_machine(a) for a in addresses):
        return "this-machine"
    return ",".join(sorted(addresses)) or host


def _this_machine(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None) or ip
    return mapped.is_loopback or mapped.is_unspecified or address in _own_addresses()


@functools.lru_cache(maxsize=1)
def _own_addresses() -> frozenset[str]:
    """This machine's addresses as its own host name resolves (an endpoint may name it by one of them)."""
    try:
        return frozenset(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except (OSError, UnicodeError):
        return frozenset()


def location_of(storage: Storage) -> Location:
    """Where ``storage``'s root really is (see the module docstring)."""
    if storage.is_local:
        # realpath resolves the part that exists (symlinks included) and normalises the rest lexically, so a
        # destination that does not exist yet still compares with its existing parent's real path.
        return Location("local", os.path.realpath(storage.root))
    protocol = storage.protocol
    store = f"s3 at {_s3_endpoint(storage.storage_options)}" if protocol in ("s3", "s3a") else protocol
    path = posixpath.normpath("/" + storage.root).lstrip("/")  # '.', '..', '//' and trailing '/' resolved
    return Location(store, path)


def overlap(a: Storage, b: Storage) -> Overlap | None:
    """How ``a``'s root relates to ``b``'s: ``same``, ``inside`` (a under b), ``contains`` (b under a) or None.
    Two local folders that exist are also compared by inode, which catches a bind mount realpath cannot see."""
    la, lb = location_of(a), location_of(b)
    found = la.overlap(lb)
    if found is None and la.store == lb.store == "local" and os.path.exists(la.path) and os.path.exists(lb.path):
        found = "same" if os.path.samefile(la.path, lb.path) else None
    return found


def dataset_above(storage: Storage) -> str | None:
    """The URI (without credentials) of a dataset whose root is a folder above ``storage``'s, if any: a new
    dataset or output there would lie among that dataset's own files (``verify --repair`` and ``--overwrite`` of
    that dataset would delete it, and ``ls`` would never list it). One existence check per level."""
    if storage.read_only:  # a web server is never written to (``require_writable``)
        return None
    loc = location_of(storage)
    parts = [p for p in loc.path.split("/") if p]
    top = 1 if loc.store != "local" else 0  # a bucket is the top of an object store
    for n in range(len(parts) - 1, top - 1, -1):
        parent = "/".join(parts[:n])
        uri = "/" + parent if loc.store == "local" else f"{storage.protocol}://{parent}"
        if Storage(uri, storage.storage_options, storage.policy).exists(MANIFEST):
            return redact_uri(uri)
    return None


def fail_fast(storage: Storage) -> Storage:
    """``storage`` with one attempt per request and a short connect timeout (as ``Storage.probe``): a check made
    before any work must not retry for a minute against an unreachable store; the command itself says so."""
    from shards.retry import RetryPolicy

    opts = dict(storage.storage_options)
    if storage.protocol in ("s3", "s3a"):
        config = dict(opts.get("config_kwargs") or {})
        config.setdefault("connect_timeout", 5)
        config.setdefault("retries", {"max_attempts": 1})
        opts["config_kwargs"] = config
    return Storage(storage.uri, opts, RetryPolicy(attempts=1))


def check_output_place(option: str, storage: Storage, may_be_dataset: bool) -> None:
    """Refuse, before anything is created, an output (``--out``) that lies inside a dataset, or (unless the
    command writes a dataset there: ``may_be_dataset``) that is one. A dataset's own folders hold only its files:
    an output among them would be deleted by the dataset's ``verify --repair`` or ``--overwrite``, and an output
    that is a dataset mixes results with data. A store that cannot be reached is left to the command (it says
    so in its own words, after its own retries)."""
    from shards.errors import ConfigError, StorageError

    if storage.read_only:  # a web server: the command refuses to write there in its own words
        return
    try:
        quick = fail_fast(storage)
        if not may_be_dataset and quick.exists(MANIFEST):
            raise ConfigError(f"{option} {storage.display()} is a dataset (it holds {MANIFEST}): results are written "
                              f"beside the data, never into it. Choose another {option}, e.g. runs/NAME.")
        above = dataset_above(quick)
    except StorageError:
        return
    if above is not None:
        raise ConfigError(f"{option} {storage.display()} lies inside the dataset {above}: a dataset's folders hold "
                          f"only its own files (its `verify --repair` and --overwrite would delete what is written "
                          f"there). Choose an {option} outside it, e.g. runs/NAME.")
