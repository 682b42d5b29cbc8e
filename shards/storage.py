"""Where datasets live: any fsspec URI, with retries and secret-free error messages.

Local paths and ``file://`` use the local filesystem; ``s3://`` goes through
s3fs, which takes endpoint, region and credentials from the usual AWS
environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``~/.aws/config`` …)
or from ``storage_options`` (``endpoint_url``, ``key``, ``secret``,
``client_kwargs``). Other fsspec protocols work as fsspec provides them.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from shards.errors import StorageError

log = logging.getLogger("actlake.storage")
T = TypeVar("T")

# Whole words of a key name (aws_session_token, hf_token, key, Authorization), not "tokenizer" or "monkey".
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(key|secret|token|password|passwd|credentials?|auth|authorization|session|api_?key)([_\-.]|$)",
    re.I)
_USERINFO = re.compile(r"^([a-zA-Z][\w+.-]*://)[^/@]*@")


def redact_uri(uri: str) -> str:
    """Drop ``user:password@`` from a URI before it reaches a log line or error."""
    return _USERINFO.sub(r"\1", str(uri))


def redact(obj: Any) -> Any:
    """Copy of a config/dict tree with secret-looking values replaced by ``"***"``."""
    if isinstance(obj, dict):
        return {
            k: ("***" if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_uri(obj)
    return obj


def _walk_items(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple)):
                yield from _walk_items(v)
            else:
                yield k, v
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_items(v)


def _is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: network trouble, throttling and 5xx answers."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__} {exc}"
    transient_words = (
        "SlowDown", "Throttl", "RequestTimeout", "InternalError", "ServiceUnavailable",
        "503", "500 ", "502", "504", "Connection", "connect", "timed out", "EndpointConnectionError",
        "ServerDisconnected", "ClientOSError", "reset by peer",
    )
    if any(w in text for w in transient_words):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE):
        return True
    return False


class Storage:
    """A dataset root on some filesystem, with retried primitive operations.

    Example::

        st = Storage("s3://bucket/acts/minilm", {"endpoint_url": "http://127.0.0.1:9000"})
        st.put_bytes("manifest.json", b"{}")
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict | None = None,
        retries: int = 6,
        backoff: float = 0.2,
    ) -> None:
        self.storage_options = dict(storage_options or {})
        self.uri = self._take_userinfo(str(uri)).rstrip("/") or "/"
        self._secrets = [str(v) for k, v in _walk_items(self.storage_options)
                         if isinstance(k, str) and _SECRET_KEY.search(k) and v and len(str(v)) >= 4]
        self.retries = retries
        self.backoff = backoff
        fs_options = dict(self.storage_options)
        if self.uri.startswith(("s3://", "s3a://")):
            # Other processes (actors, a rerun) add files: a cached listing would hide them.
            fs_options.setdefault("use_listings_cache", False)
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.uri, **fs_options)
        except (ValueError, ImportError) as exc:
            raise StorageError(
                f"cannot open {redact_uri(self.uri)!r}: {exc}. Use a local path or an fsspec URI "
                "such as s3://bucket/prefix (with s3fs installed)."
            ) from None
        self.root = self.root.rstrip("/") if self.root != "/" else self.root
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def _take_userinfo(self, uri: str) -> str:
        """``s3://KEY:SECRET@bucket/x`` -> ``s3://bucket/x`` with key/secret moved to the options."""
        m = re.match(r"^([a-zA-Z][\w+.-]*)://([^/@]*)@(.*)$", uri)
        if not m:
            return uri
        proto, userinfo, rest = m.groups()
        user, _, password = userinfo.partition(":")
        if proto in ("s3", "s3a") and user:
            self.storage_options.setdefault("key", user)
            if password:
                self.storage_options.setdefault("secret", password)
        return f"{proto}://{rest}"

    def scrub(self, text: str) -> str:
        """Remove every known secret from a message."""
        text = redact_uri(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def probe(self) -> None:
        """Fail within seconds, with a StorageError naming the URI, when the store cannot be reached.

        Normal operations retry transient errors for about a minute (s3fs and
        botocore retry inside each of our attempts); a job checks its
        destination with this first, before any work starts.
        """
        opts = dict(self.storage_options)
        if self.uri.startswith(("s3://", "s3a://")):
            config = dict(opts.get("config_kwargs") or {})
            config.setdefault("connect_timeout", 5)
            config.setdefault("retries", {"max_attempts": 1})
            opts["config_kwargs"] = config
        Storage(self.uri, opts, retries=1, backoff=0.2).exists("manifest.json")

    # --- naming --------------------------------------------------------------
    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def display(self, rel: str = "") -> str:
        """The URI of ``rel`` as shown to people (no credentials)."""
        base = redact_uri(self.uri)
        return f"{base}/{rel}" if rel else base

    def child(self, rel: str) -> Storage:
        return Storage(f"{self.uri}/{rel}", self.storage_options, self.retries, self.backoff)

    # --- retry ---------------------------------------------------------------
    def retry(self, what: str, rel: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry transient errors with jittered exponential backoff."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except FileNotFoundError as exc:
                if what in ("read", "stat", "exists", "open"):
                    raise  # the caller decides what a missing object means
                raise StorageError(
                    f"{what} failed for {self.display(rel)}: {self.scrub(str(exc))}. "
                    "Does the bucket (or parent directory) exist, and may these credentials write to it?"
                ) from None
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_transient(exc) or attempt == self.retries:
                    raise StorageError(
                        f"{what} failed for {self.display(rel)}: {type(exc).__name__}: "
                        f"{self.scrub(str(exc))}"
                    ) from None
                log.warning(
                    "transient error on %s of %s (attempt %d/%d): %s; retrying in %.1fs",
                    what, self.display(rel), attempt + 1, self.retries, type(exc).__name__, delay,
                )
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 10.0)
                self._invalidate()
        raise AssertionError("unreachable")

    def _invalidate(self) -> None:
        try:
            self.fs.invalidate_cache()
        except Exception:  # noqa: BLE001 - cache invalidation is best effort
            pass

    # --- primitives ----------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.retry("exists", rel, lambda: self.fs.exists(self.path(rel)))

    def get_bytes(self, rel: str) -> bytes:
        return self.retry("read", rel, lambda: self.fs.cat_file(self.path(rel)))

    def size(self, rel: str) -> int:
        return int(self.retry("stat", rel, lambda: self.fs.size(self.path(rel))))

    def put_bytes(self, rel: str, data: bytes | memoryview) -> None:
        """Write an object whole: readers see the old object or the new one, never a part.

        On object stores a single PUT (or a completed multipart upload) is
        atomic. On a local disk we write a temporary sibling and rename it.
        """
        path = self.path(rel)

        def local() -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise

        def remote() -> None:
            self.fs.pipe_file(path, bytes(data) if isinstance(data, memoryview) else data)

        self.retry("write", rel, local if self.is_local else remote)

    @contextmanager
    def open_output(self, rel: str, fsync: bool = True) -> Iterator:
        """A binary file whose content appears at ``rel`` whole, or not at all.

        On disk: a temporary sibling, fsync'ed and renamed on success, removed on
        failure. On object stores: a (multipart) upload completed on success and
        aborted on failure, so no partial object is ever visible.
        """
        path = self.path(rel)
        if self.is_local:
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
                f.close()
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
            return
        f = self.fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            if hasattr(f, "discard"):
                f.discard()
            raise
        finally:
            f.close()

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` only if absent; return False if it already exists."""
        path = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True

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

        return self.retry("create", rel, put)

    def delete(self, rel: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self.path(rel))
            except FileNotFoundError:
                pass

        self.retry("delete", rel, rm)

    def delete_prefix(self, rel: str) -> None:
        def rm() -> None:
            p = self.path(rel)
            if self.fs.exists(p):
                self.fs.rm(p, recursive=True)

        self.retry("delete", rel, rm)

    def list(self, rel: str) -> list[str]:
        """Names (not paths) of the files directly under ``rel``; [] if none."""
        p = self.path(rel)

        def ls() -> list[str]:
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

        return self.retry("list", rel, ls)

    def walk_dirs(self, rel: str = "", maxdepth: int = 4) -> list[str]:
        """Relative directories under ``rel`` (including itself) holding a manifest.json."""
        base = self.path(rel)

        def find() -> list[str]:
            self._invalidate()
            found = self.fs.find(base, maxdepth=maxdepth + 1)
            out = []
            for f in found:
                if posixpath.basename(f) == "manifest.json":
                    d = posixpath.dirname(f)
                    out.append(posixpath.relpath(d, self.root) if d != self.root else "")
            return sorted(out)

        return self.retry("list", rel, find)

    def open_input(self, rel: str):
        """A seekable binary file for Parquet footers and row groups."""
        return self.retry("open", rel, lambda: self.fs.open(self.path(rel), "rb"))
