"""Where datasets live: any fsspec URI, with retries and secret-free error messages.

Local paths and ``file://`` use the local filesystem; ``s3://`` goes through s3fs, which takes endpoint,
region and credentials from the usual AWS environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``~/.aws/config`` ...) or from the storage options (``StorageOptions`` on the command line, or a dict
such as ``{"endpoint_url": ..., "key": ..., "secret": ...}`` in Python). Other protocols work as fsspec
provides them.

Retries have two layers, each with one job: botocore's standard retry mode retries throttling and 5xx
answers inside every request; ``Storage`` retries what is left when the connection itself fails (the
exception classes in ``transient_errors``), e.g. while an S3 server restarts.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import posixpath
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from simple_parsing import field

from shards.errors import ActlakeError, ConfigError, StorageError
from shards.retry import RetryPolicy, retry
from shards.secrets import redact_message, redact_uri, secret_values, split_credentials

log = logging.getLogger("actlake.storage")
T = TypeVar("T")
_S3 = ("s3://", "s3a://")
#: protocols that can only be read (a static web server or CDN): no listing, no writes
READ_ONLY = ("http://", "https://")
#: options only a web server's Storage uses
_HTTP_ONLY = ("http_user", "http_password", "ssl_ca_file")
#: fsspec's words when an HTTP server answers a range request with the whole file
_NO_RANGES = "support range requests"


def transient_errors() -> tuple[type[BaseException], ...]:
    """The failures ``Storage`` retries: the connection was refused, reset, closed or timed out.

    The object-store clients' own classes are taken from modules already loaded: a client that can
    raise them has imported them (and a local disk never pays for importing botocore).
    """
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:  # EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ...
        classes += [botocore.ConnectionError, botocore.HTTPClientError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        classes.append(aiohttp.ClientConnectionError)
    return tuple(classes)


def untrusted_certificate_errors() -> tuple[type[BaseException], ...]:
    """A TLS certificate this machine does not trust: a connection error that retrying cannot fix."""
    import ssl

    classes: list[type[BaseException]] = [ssl.SSLCertVerificationError]
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        classes.append(aiohttp.ClientConnectorCertificateError)
    return tuple(classes)


class ExtendOptions(argparse.Action):
    """``--storage-option A=1 B=2 --storage-option C=3``: every flag counts, after a job file's list (or single
    option); argparse's ``store`` kept only the last flag's, silently."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = getattr(namespace, self.dest, None)
        items = [given] if isinstance(given, str) else list(given or [])
        setattr(namespace, self.dest, items + list(values or []))


def check_option_list(items: list[str], flag: str) -> None:
    """Refuse a ``KEY=VALUE`` option list with an item that is not one, or with a KEY given twice (a repeated
    ``--storage-option`` flag once kept only its last value, silently); the messages never show a value."""
    seen: set[str] = set()
    for item in items:
        key = str(item).split("=", 1)[0]
        if "=" not in str(item) or not key:
            raise ConfigError(f"{flag} {redact_message(repr(str(item)))}: write KEY=VALUE, e.g. requester_pays=true")
        if key in seen:
            raise ConfigError(f"{flag} {redact_message(key)}=... is given twice (flags and a job file's list "
                              "count together): give each option once")
        seen.add(key)


@dataclass
class StorageOptions:
    """Where the data lives, beyond the URI (credentials come from the usual environment, never from flags)."""

    endpoint_url: str | None = None
    """S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT_URL or AWS)."""

    region: str | None = None
    """Object-store region (default: AWS_DEFAULT_REGION or the profile's)."""

    profile: str | None = None
    """A named profile of ~/.aws/config and ~/.aws/credentials."""

    anonymous: bool = field(default=False, action="store_true")
    """Read public buckets without credentials."""

    storage_option: list[str] = field(default_factory=list, nargs="*", action=ExtendOptions)
    """Any other fsspec option as KEY=VALUE (JSON values), e.g. --storage-option requester_pays=true; repeat the
    flag (or give several after one) for more options."""

    credentials: dict[str, str] = field(default_factory=dict, cmd=False)
    """Key, secret and token taken out of a ``KEY:SECRET@`` URI (``take_credentials``): held here once, never
    a flag, redacted wherever a config is written."""

    def __post_init__(self) -> None:
        self.storage_option = [self.storage_option] if isinstance(self.storage_option, str) else self.storage_option
        check_option_list(self.storage_option, "--storage-option")

    def to_fsspec(self) -> dict:
        """The fsspec keyword arguments these options stand for (S3 names; the rest passed through)."""
        out: dict[str, Any] = {}
        if self.endpoint_url:
            out["endpoint_url"] = self.endpoint_url
        if self.region:
            out["client_kwargs"] = {"region_name": self.region}
        if self.profile:
            out["profile"] = self.profile
        if self.anonymous:
            out["anon"] = True
        for item in self.storage_option:
            key, _, value = item.partition("=")
            try:
                out[key] = value if key in ("key", "secret", "token") else json.loads(value)
            except ValueError:
                out[key] = value
        out.update(self.credentials)
        return out


#: s3fs options pyarrow's S3 filesystem can stand in for
_NATIVE_KEYS = {"endpoint_url", "client_kwargs", "anon", "key", "secret", "token", "use_listings_cache",
                "config_kwargs"}


def native_s3(options: dict):
    """pyarrow's ``S3FileSystem`` equivalent to the s3fs ``options``, or None where it cannot be."""
    if os.environ.get("ACTLAKE_S3_READER", "pyarrow") == "s3fs" or set(options) - _NATIVE_KEYS:
        return None
    if set(options.get("client_kwargs") or {}) - {"region_name"}:
        return None
    try:
        from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem
    except ImportError:
        return None
    kw: dict[str, Any] = {"retry_strategy": AwsStandardS3RetryStrategy(max_attempts=10)}
    endpoint = options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kw.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    region = (options.get("client_kwargs") or {}).get("region_name") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    if options.get("anon"):
        kw["anonymous"] = True
    if options.get("key"):
        kw.update(access_key=options["key"], secret_key=options.get("secret"), session_token=options.get("token"))
    return S3FileSystem(**kw)


def _hint(exc: BaseException) -> str:
    """What to do about a failure people meet when reading a served dataset."""
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (". The server's TLS certificate is not trusted here: point SSL_CERT_FILE (or --storage-option "
                "ssl_ca_file=PATH) at the bundle of the CA that signed it (a private or self-signed server)")
    if " 401" in text or "401," in text:
        return ". The server wants a login: give it in the URI (https://USER:PASSWORD@host/...; never stored)"
    return ""


class OriginAuth:
    """An aiohttp client middleware sending HTTP basic authentication to one origin (scheme, host, port) only.

    aiohttp re-applies a session's ``auth`` to every request, redirects to other origins included (a server
    answering ``302 http://elsewhere/`` would receive the login in cleartext); a middleware runs for every hop of
    a redirect chain, so the login goes only where it was given for. Made once per (origin, login) by
    ``origin_auth``, so fsspec's cache of filesystems (keyed on its options' text) still finds one session."""

    def __init__(self, origin: str, user: str, password: str) -> None:
        import aiohttp
        from yarl import URL

        self.origin = URL(origin).origin()
        self._header = aiohttp.BasicAuth(user, password).encode()

    async def __call__(self, request, handler):
        """Add the login to a request for the origin; every other request goes without it."""
        from aiohttp import hdrs

        if request.url.origin() == self.origin:
            request.headers[hdrs.AUTHORIZATION] = self._header
        return await handler(request)


def origin_auth(uri: str, user: str, password: str) -> OriginAuth:
    """The one ``OriginAuth`` of a login for ``uri``'s origin in this process."""
    from yarl import URL

    return _origin_auth(str(URL(uri).origin()), user, password)


@functools.lru_cache(maxsize=64)
def _origin_auth(origin: str, user: str, password: str) -> OriginAuth:
    return OriginAuth(origin, user, password)


def _http_options(options: dict, uri: str) -> dict:
    """fsspec's HTTP options from ours: basic-auth credentials taken out of ``uri`` become a middleware that
    sends them to ``uri``'s origin only (``OriginAuth``), never a session-wide ``auth`` that follows redirects
    to other hosts; a CA bundle (``ssl_ca_file``, else ``SSL_CERT_FILE``) becomes the requests' TLS context.
    aiohttp makes its default context once, when it is imported, so an ``SSL_CERT_FILE`` set later (or by a
    caller that imported Ray first) would otherwise be ignored."""
    out = dict(options)
    ca_file = out.pop("ssl_ca_file", None) or os.environ.get("SSL_CERT_FILE")
    if ca_file:
        import ssl

        out["ssl"] = ssl.create_default_context(cafile=ca_file)
    user, password = out.pop("http_user", None), out.pop("http_password", None)
    if user is not None:
        import inspect

        import aiohttp

        if "middlewares" not in inspect.signature(aiohttp.ClientSession.__init__).parameters:
            raise ConfigError(f"{redact_uri(uri)}: a login for a web server needs aiohttp 3.12 or later (installed: "
                              f"{aiohttp.__version__}), which can keep it from following redirects to other hosts: "
                              "pip install 'aiohttp>=3.12'")
        client = dict(out.get("client_kwargs") or {})
        if "auth" in client:  # a login given twice: the one that would follow redirects is refused
            raise ConfigError(f"{redact_uri(uri)}: give the login once, in the URI (https://USER:PASSWORD@host/...), "
                              "not also as --storage-option client_kwargs auth")
        client["middlewares"] = (*client.get("middlewares", ()), origin_auth(uri, user, password or ""))
        out["client_kwargs"] = client
    return out


def as_fsspec_options(options: StorageOptions | dict | None) -> dict:
    """Storage options as fsspec keyword arguments, from either form."""
    if isinstance(options, StorageOptions):
        return options.to_fsspec()
    return dict(options or {})


#: S3 endpoints this process has had an answer from. A store not reached yet is probed once, quickly, before its
#: first operation (``Storage._reach``): an endpoint where nothing listens then fails in seconds, where every
#: operation's retries (botocore's and ours, meant for a store that answered before) took about seven minutes.
_REACHED: set[str] = set()
#: the probe's patience: a connect timeout per try, one try per botocore call, 3 calls in all (about 16 s at most
#: for an address that never answers; under a second for a refused connection)
_PROBE_CONNECT_TIMEOUT = 5
_PROBE_POLICY = RetryPolicy(attempts=2)


def s3_endpoint(options: dict) -> str:
    """The endpoint an S3 client of these fsspec options talks to, as s3fs/botocore choose it ("" for AWS)."""
    return str(options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
               or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "")


def quick_s3_options(options: dict) -> dict:
    """``options`` with a short connect timeout and one try per request, where the user set neither."""
    opts = dict(options)
    config = dict(opts.get("config_kwargs") or {})
    config.setdefault("connect_timeout", _PROBE_CONNECT_TIMEOUT)
    config.setdefault("retries", {"max_attempts": 1})
    opts["config_kwargs"] = config
    return opts


class Storage:
    """A dataset root on some filesystem, with retried primitive operations.

    Example::

        st = Storage("s3://bucket/acts/minilm", {"endpoint_url": "http://127.0.0.1:9000"})
        st.put_bytes("manifest.json", b"{}")
    """

    def __init__(self, uri: str, storage_options: StorageOptions | dict | None = None,
                 policy: RetryPolicy = RetryPolicy()) -> None:
        self.storage_options = as_fsspec_options(storage_options)
        self.uri = self._take_userinfo(str(uri)).rstrip("/") or "/"
        self._secrets = secret_values(self.storage_options)
        self.policy = policy
        fs_options = dict(self.storage_options)
        if self.uri.startswith(_S3):
            # Other processes (actors, a rerun) add files: a cached listing would hide them.
            fs_options.setdefault("use_listings_cache", False)
            config = dict(fs_options.get("config_kwargs") or {})
            config.setdefault("retries", {"mode": "standard", "max_attempts": 10})  # throttling and 5xx
            fs_options["config_kwargs"] = config
        if self.read_only:
            fs_options = _http_options(fs_options, self.uri)
        else:  # a web server's login or CA given for another URI of the same command (--data https://… --out s3://…)
            fs_options = {k: v for k, v in fs_options.items() if k not in _HTTP_ONLY}
        try:
            self.fs, root = fsspec.core.url_to_fs(self.uri, **fs_options)
        except Exception as exc:  # noqa: BLE001 - an unknown protocol, a missing package, or a filesystem that
            # connects when it is made (ftp://, sftp://: an unknown host, a refused port) -- all named, no traceback
            raise StorageError(f"cannot open {redact_uri(self.uri)!r}: {type(exc).__name__}: {self.scrub(str(exc))}. "
                               "Use a local path, file://, s3://bucket/prefix, https://host/path (read-only), or "
                               "another fsspec URI whose filesystem is installed and whose server answers.") from None
        self.root = root.rstrip("/") if root != "/" else root
        self.is_local = isinstance(self.fs, LocalFileSystem)

    @property
    def read_only(self) -> bool:
        """A web server's files (``https://``): read by range requests, never listed or written."""
        return self.uri.startswith(READ_ONLY)

    def require_writable(self, what: str) -> None:
        """Refuse, before any work, to write where nothing can be written (a web server)."""
        if self.read_only:
            raise ConfigError(f"{self.display()} is served over HTTP, which is read-only: {what} needs a local "
                              "directory or an object store. Copy the dataset first (`actlake copy "
                              f"{self.display()} DST`), then write there.")

    def check_range_reads(self, rel: str = "manifest.json") -> None:
        """Fail with a StorageError saying what the server lacks when it does not answer range requests (a
        Parquet reader reads footers and row groups, never whole files). Only web servers are asked."""
        if not self.read_only:
            return

        def ranged() -> bytes:
            with self.fs.open(self.path(rel), "rb", block_size=8, cache_type="none") as f:
                f.seek(1)
                return f.read(2)

        try:
            self.call("read", rel, ranged)
        except StorageError as exc:
            if _NO_RANGES in str(exc):
                raise StorageError(
                    f"{self.display()}: the web server does not answer HTTP range requests (it sent the whole file "
                    "when asked for bytes 1-2 of manifest.json). actlake reads Parquet footers and row groups by "
                    "range: serve the dataset with a server or CDN that honours `Range:` headers (nginx, Apache, "
                    "Caddy, S3 or GCS static hosting; not `python -m http.server`).") from None
            raise

    def _take_userinfo(self, uri: str) -> str:
        """``s3://KEY:SECRET@bucket/x`` -> ``s3://bucket/x`` with key/secret moved to the options."""
        clean, creds = split_credentials(uri)
        self.storage_options.update(creds)  # the URI's own credentials win for this URI
        return clean

    def scrub(self, text: str) -> str:
        """Remove every known secret from a message."""
        text = redact_uri(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def probe(self) -> None:
        """Fail within seconds, with a StorageError naming the URI, when the store cannot be reached.

        Normal operations retry for about a minute; a job checks its destination with this first,
        before any work starts.
        """
        opts = dict(self.storage_options)
        if self.uri.startswith(_S3):
            config = dict(opts.get("config_kwargs") or {})
            config.setdefault("connect_timeout", 5)
            config.setdefault("retries", {"max_attempts": 1})
            opts["config_kwargs"] = config
        Storage(self.uri, opts, RetryPolicy(attempts=1)).exists("manifest.json")

    # --- naming --------------------------------------------------------------
    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def display(self, rel: str = "") -> str:
        """The URI of ``rel`` as shown to people (no credentials)."""
        base = redact_uri(self.uri)
        if not rel:
            return base
        return f"{base}{'' if base.endswith('/') else '/'}{rel}"  # a file of "/" is "/x", not "//x"

    def child(self, rel: str) -> Storage:
        return Storage(f"{self.uri}/{rel}", self.storage_options, self.policy)

    @classmethod
    def for_file(cls, uri: str, storage_options: StorageOptions | dict | None = None) -> tuple[Storage, str]:
        """``(storage of the file's folder, the file's name)`` for one file named by URI (a table, a prompts or
        zoo file, a direction, an image): read it with ``st.get_bytes(name)``, name it with ``st.display(name)``.
        A bare name is in the current folder; ``/x.csv`` in ``/``.

        Example::

            st, name = Storage.for_file("s3://bucket/labels/pos.parquet", options)
            data = st.get_bytes(name)
        """
        parent, slash, name = str(uri).rstrip("/").rpartition("/")
        return cls(parent or ("/" if slash else "."), storage_options), name

    # --- the one retried call ------------------------------------------------
    def call(self, what: str, rel: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T:
        """Run ``fn`` (an operation on ``rel``), retrying the classes of ``transient_errors``.

        ``missing_ok``: a FileNotFoundError reaches the caller as itself (a missing object it expects
        and handles); otherwise a missing bucket or parent is a StorageError that says so. Every other
        failure becomes a StorageError naming the object, with secrets removed.
        """
        self._reach(rel)

        def attempt() -> T:
            try:
                return fn()
            except FileNotFoundError as exc:
                if missing_ok:
                    raise
                raise StorageError(f"{what} failed for {self.display(rel)}: {self.scrub(str(exc))}. Does the bucket "
                                   "(or parent directory) exist, and may these credentials write to it?") from None
            except untrusted_certificate_errors() as exc:  # no retry makes a certificate trusted
                raise StorageError(f"{what} failed for {self.display(rel)}: {type(exc).__name__}: "
                                   f"{self.scrub(str(exc))}{_hint(exc)}") from None

        def on_retry(n: int, exc: BaseException, delay: float) -> None:
            log.warning("transient error on %s of %s (attempt %d/%d): %s; retrying in %.1fs", what,
                        self.display(rel), n, self.policy.attempts, type(exc).__name__, delay)
            self._invalidate()

        try:
            return retry(attempt, retry_on=transient_errors(), policy=self.policy, on_retry=on_retry)
        except (FileNotFoundError, ActlakeError):
            raise  # missing (the caller asked for it), or already named: a damaged file, a failed store
        except Exception as exc:  # noqa: BLE001 - every other store failure, named and scrubbed
            raise StorageError(f"{what} failed for {self.display(rel)}: {type(exc).__name__}: "
                               f"{self.scrub(str(exc))}{_hint(exc)}") from None

    def _reach(self, rel: str = "") -> None:
        """Before the first operation on an S3 endpoint in this process: one quick look at the bucket (short connect
        timeout, 3 tries in about a second), so that an endpoint where nothing listens is a StorageError naming it
        in seconds. Any answer, a refusal included, counts as reached: the operation itself reports it."""
        if not self.uri.startswith(_S3) or getattr(self, "_probing", False):
            return
        endpoint = s3_endpoint(self.storage_options)
        if endpoint in _REACHED:
            return
        quick = Storage(self.uri, quick_s3_options(self.storage_options), _PROBE_POLICY)
        quick._probing = True
        try:
            # HEAD of the bucket: one small request that raises what the connection met (exists() would swallow it)
            bucket = quick.root.split("/", 1)[0]
            retry(lambda: quick.fs.call_s3("head_bucket", Bucket=bucket), retry_on=transient_errors(),
                  policy=_PROBE_POLICY)
        except transient_errors() as exc:
            where = f"the S3 endpoint {redact_uri(endpoint)}" if endpoint else "AWS S3"
            raise StorageError(
                f"cannot reach {where} for {self.display(rel)}: {type(exc).__name__}: {self.scrub(str(exc))}. Nothing "
                "answered there (tried 3 times): check that the store is running and the endpoint is right "
                "(--endpoint-url, AWS_ENDPOINT_URL), and that this machine can reach it.") from None
        except Exception:  # noqa: BLE001, S110 - it answered (a refusal, missing credentials): the operation says so
            pass
        _REACHED.add(endpoint)

    def _invalidate(self) -> None:
        try:
            self.fs.invalidate_cache()
        except Exception:  # noqa: BLE001 - cache invalidation is best effort
            pass

    # --- primitives ----------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.call("exists", rel, lambda: self.fs.exists(self.path(rel)))

    def get_bytes(self, rel: str) -> bytes:
        """The object's bytes; FileNotFoundError when it does not exist."""
        return self.call("read", rel, lambda: self.fs.cat_file(self.path(rel)), missing_ok=True)

    def size(self, rel: str) -> int:
        """The object's size in bytes; FileNotFoundError when it does not exist."""
        return int(self.call("stat", rel, lambda: self.fs.size(self.path(rel)), missing_ok=True))

    @property
    def arrow_fs(self):
        """pyarrow's native S3 filesystem for this root's options (its reads run in C++ without the GIL; as
        fast as s3fs's or faster, docs/benchmarks.md), or None: not S3, options only s3fs knows (a profile,
        other --storage-option keys), ``ACTLAKE_S3_READER=s3fs``, or a pyarrow built without S3."""
        if not hasattr(self, "_arrow_fs"):
            options = {k: v for k, v in self.storage_options.items() if k not in _HTTP_ONLY}
            self._arrow_fs = native_s3(options) if self.uri.startswith(_S3) else None
        return self._arrow_fs

    def open_read(self, rel: str):
        """A random-access file for Parquet reads: pyarrow's native S3 file where ``arrow_fs`` allows it,
        else the fsspec file."""
        fs = self.arrow_fs
        if fs is not None:
            return fs.open_input_file(self.path(rel).split("://", 1)[-1])
        return self.fs.open(self.path(rel), "rb")

    def open_input(self, rel: str):
        """A seekable binary file for Parquet footers and row groups; FileNotFoundError when missing."""
        return self.call("open", rel, lambda: self.fs.open(self.path(rel), "rb"), missing_ok=True)

    def put_bytes(self, rel: str, data: bytes | memoryview, fsync: bool = True) -> None:
        """Write an object whole: readers see the old object or the new one, never a part.

        On object stores a single PUT (or a completed multipart upload) is atomic. On a local disk
        we write a temporary sibling and rename it (``fsync``: flushed to the disk first).
        """
        def local() -> None:
            with self._local_output(rel, fsync=fsync) as f:
                f.write(data)

        def remote() -> None:
            self.fs.pipe_file(self.path(rel), bytes(data) if isinstance(data, memoryview) else data)

        self.call("write", rel, local if self.is_local else remote)

    @contextmanager
    def _local_output(self, rel: str, fsync: bool) -> Iterator:
        path = self.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
        f = open(tmp, "wb")
        try:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
        except BaseException:
            try:
                f.close()  # raises again when the disk is full (buffered bytes): the removal must still run
            except OSError:
                pass
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            raise

    @contextmanager
    def open_output(self, rel: str, fsync: bool = True) -> Iterator:
        """A binary file whose content appears at ``rel`` whole, or not at all.

        On disk: a temporary sibling, fsync'ed and renamed on success, removed on failure. On object
        stores: a (multipart) upload completed on success and aborted on failure.
        """
        if self.is_local:
            with self._local_output(rel, fsync) as f:
                yield f
            return
        f = self.fs.open(self.path(rel), "wb")
        try:
            yield f
        except BaseException:
            if hasattr(f, "discard"):
                f.discard()
            raise
        finally:
            f.close()

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` whole, only if absent; return False if it already exists.

        Readers see no object or the whole one, never a part: on a disk the bytes go to a temporary sibling
        (fsync'ed), then ``link()`` gives it its name, which fails when the name exists (POSIX: atomic, also on
        NFS), as Delta's and Lance's local commit stores do; on S3 one PUT with ``If-None-Match: *``. A version's
        log entry is created this way, so no version is ever written twice. On S3 a retried PUT whose first try
        succeeded answers "exists": callers that must know compare the object with what they wrote."""
        path = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                return True
            finally:
                if os.path.exists(tmp):  # a full disk included: no empty or partial object is left
                    os.remove(tmp)

        def put() -> bool:
            try:
                with self.fs.open(path, "xb") as f:
                    f.write(data)
                return True
            except FileExistsError:
                return False
            except (ValueError, NotImplementedError):
                # Stores without conditional writes: check, then write (racy, documented).
                if self.fs.exists(path):
                    return False
                self.fs.pipe_file(path, data)
                return True

        return self.call("create", rel, put)

    def delete(self, rel: str) -> None:
        """Remove an object; one that is already gone is fine."""
        def rm() -> None:
            try:
                self.fs.rm_file(self.path(rel))
            except FileNotFoundError:
                pass

        self.call("delete", rel, rm)

    def delete_many(self, rels: list[str]) -> None:
        """Remove objects (those already gone are fine): on object stores in batches of up to 1,000 per request
        (S3's DeleteObjects), locally from a pool of threads (unlink releases the GIL: retiring a 10k-unit version's
        commit records took 16 s one by one on a busy disk)."""
        if not rels:
            return
        if self.is_local:
            if len(rels) < 64:
                for rel in rels:
                    self.delete(rel)
                return
            from shards.parallel import in_parallel

            in_parallel(self.delete, list(rels))
            return
        for start in range(0, len(rels), 1000):
            chunk = rels[start:start + 1000]

            def rm(chunk=chunk) -> None:
                try:
                    self.fs.rm([self.path(r) for r in chunk])
                except FileNotFoundError:
                    pass

            self.call("delete", chunk[0], rm)

    def delete_prefix(self, rel: str) -> None:
        def rm() -> None:
            p = self.path(rel)
            if self.fs.exists(p):
                self.fs.rm(p, recursive=True)

        self.call("delete", rel, rm)

    def list(self, rel: str) -> list[str]:
        """Names (not paths) of the files directly under ``rel``; [] if none."""
        self._require_listing(rel)
        p = self.path(rel)

        def ls() -> list[str]:
            if self.is_local:  # one scandir: fsspec's local ls stats every entry (seconds at 100k commit records)
                try:
                    with os.scandir(p) as it:
                        return sorted(e.name for e in it if e.is_file())
                except (FileNotFoundError, NotADirectoryError):
                    return []
            self._invalidate()
            try:
                entries = self.fs.ls(p, detail=True)
            except FileNotFoundError:
                return []
            names = []
            for e in entries:
                name = posixpath.basename(e["name"].rstrip("/"))
                # pyarrow's S3 filesystem leaves an empty "prefix/" marker object behind.
                if e.get("type") == "file" and name and e["name"].rstrip("/") != p.rstrip("/"):
                    names.append(name)
            return sorted(names)

        return self.call("list", rel, ls)

    def entries(self, rel: str = "") -> tuple[list[str], list[str]]:
        """(file names, folder names) directly under ``rel``, each sorted; both empty when it does not exist."""
        self._require_listing(rel)
        p = self.path(rel)

        def local() -> tuple[list[str], list[str]]:
            try:
                with os.scandir(p) as it:
                    found = [(e.name, e.is_dir()) for e in it]
            except (FileNotFoundError, NotADirectoryError):
                return [], []
            return sorted(n for n, d in found if not d), sorted(n for n, d in found if d)

        def remote() -> tuple[list[str], list[str]]:
            self._invalidate()
            try:
                listed = self.fs.ls(p, detail=True)
            except FileNotFoundError:
                return [], []
            files, folders = [], []
            for e in listed:
                name = posixpath.basename(e["name"].rstrip("/"))
                if name and e["name"].rstrip("/") != p.rstrip("/"):
                    (folders if e.get("type") == "directory" else files).append(name)
            return sorted(files), sorted(folders)

        return self.call("list", rel, local if self.is_local else remote)

    def _require_listing(self, rel: str) -> None:
        if self.read_only:
            raise StorageError(f"{self.display(rel)}: a web server's folders cannot be listed; actlake reads a "
                               "served dataset through the files its manifest names (this operation needs a "
                               "listing: run it where the dataset is stored, or on a copy)")

    # --- input files: a corpus, stimuli, a table to import (the root may be a file, a folder or a glob) ---
    @property
    def protocol(self) -> str:
        proto = self.fs.protocol
        return proto[0] if isinstance(proto, (tuple, list)) else proto

    def uri_of(self, path: str) -> str:
        """A path this filesystem returned (``find``, ``glob``) as a URI people and other Storages can use."""
        return redact_uri(path if self.is_local else f"{self.protocol}://{path}")

    def rel(self, path: str) -> str:
        """A path this filesystem returned, relative to the root ('' for the root itself)."""
        return "" if path.rstrip("/") == self.root.rstrip("/") else posixpath.relpath(path, self.root)

    def is_dir(self, rel: str = "") -> bool:
        return bool(self.call("stat", rel, lambda: self.fs.isdir(self.path(rel))))

    def is_file(self, rel: str = "") -> bool:
        return bool(self.call("stat", rel, lambda: self.fs.isfile(self.path(rel))))

    def info(self, rel: str = "") -> dict:
        """The object's details (size, type, ETag or mtime); FileNotFoundError when it does not exist."""
        return self.call("stat", rel, lambda: self.fs.info(self.path(rel)), missing_ok=True)

    def glob(self, pattern: str = "") -> dict[str, dict]:
        """Each match of ``pattern`` below the root (``*/schedule.json``; '': the root itself read as a pattern,
        ``s3://bucket/crawl/*.jsonl``): its path and details."""
        def matches() -> dict[str, dict]:
            self._invalidate()
            try:
                return dict(self.fs.glob(self.path(pattern), detail=True))
            except FileNotFoundError:
                return {}

        return self.call("list", pattern, matches)

    def find(self, rel: str = "") -> dict[str, dict]:
        """Every file below ``rel``, at any depth: path -> details ({} when there is none)."""
        self._require_listing(rel)
        def walk() -> dict[str, dict]:
            self._invalidate()
            return dict(self.fs.find(self.path(rel).rstrip("/") or "/", detail=True))

        return self.call("list", rel, walk)

    def ls(self, rel: str = "") -> list[str]:
        """Paths of the files and folders directly under ``rel``, sorted; [] when it does not exist."""
        def entries() -> list[str]:
            self._invalidate()
            try:
                return sorted(self.fs.ls(self.path(rel), detail=False))
            except FileNotFoundError:
                return []

        return self.call("list", rel, entries)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object; FileNotFoundError when it does not exist.

        The length is checked: fsspec's HTTP client hands back a whole file when the server ignores ``Range:``."""
        data = self.call("read", rel, lambda: self.fs.cat_file(self.path(rel), start, end), missing_ok=True)
        if len(data) > end - start:  # fewer is an object's end; more is a server that ignored the range
            raise StorageError(f"{self.display(rel)}: asked for bytes [{start}, {end}), got {len(data)}: the server "
                               "does not answer range requests")
        return data

    def read_text(self, rel: str = "", encoding: str = "utf-8") -> str:
        """An object's text; FileNotFoundError when it does not exist."""
        return self.get_bytes(rel).decode(encoding)

    def walk_dirs(self, rel: str = "", maxdepth: int = 4) -> list[str]:
        """Relative directories under ``rel`` (including itself) holding a manifest.json."""
        self._require_listing(rel)
        base = self.path(rel)

        def find() -> list[str]:
            self._invalidate()
            out = []
            for f in self.fs.find(base, maxdepth=maxdepth + 1):
                if posixpath.basename(f) == "manifest.json":
                    d = posixpath.dirname(f)
                    out.append(posixpath.relpath(d, self.root) if d != self.root else "")
            return sorted(out)

        return self.call("list", rel, find)
