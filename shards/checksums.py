"""File checksums as the manifest records them: ``xxh3_128:<32 hex digits>`` of the whole file."""

from __future__ import annotations

import xxhash

from shards.manifest import CHECKSUM_ALGORITHM


def checksum(data) -> str:
    return f"{CHECKSUM_ALGORITHM}:{xxhash.xxh3_128_hexdigest(data)}"


class HashingSink:
    """A write-only file that checksums what passes through it on the way to ``raw``.

    Hashing while writing saves a second pass over the file (or holding it all in memory).
    """

    def __init__(self, raw) -> None:
        self.raw = raw
        self.size = 0
        self._hash = xxhash.xxh3_128()
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # the owner of ``raw`` closes it
        self.closed = True

    def writable(self) -> bool:
        return True

    def checksum(self) -> str:
        return f"{CHECKSUM_ALGORITHM}:{self._hash.hexdigest()}"
