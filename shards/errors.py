"""Errors raised by the dataset format; each message names the problem and the fix."""

from __future__ import annotations


class ActlakeError(Exception):
    """Base class of every error actlake raises on purpose."""


class DatasetNotFoundError(ActlakeError, FileNotFoundError):
    """No dataset (no manifest.json) at the given URI."""


class DatasetExistsError(ActlakeError, FileExistsError):
    """mode="create" on a URI that already holds a dataset."""


class SchemaMismatchError(ActlakeError, ValueError):
    """Hooks or columns differ from the dataset's recorded schema."""


class UnknownHookError(ActlakeError, KeyError):
    """A hook name that the dataset does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UnsupportedDtypeError(ActlakeError, ValueError):
    """A tensor dtype the format cannot store."""


class DatasetLockedError(ActlakeError, RuntimeError):
    """Another writer holds the dataset's write lock."""


class LockLostError(DatasetLockedError):
    """This writer's lock was taken over (it stalled past its ttl, or clocks disagree): it commits nothing more."""


class VersionConflictError(LockLostError):
    """The version this writer was committing was created by another writer first: it commits nothing more."""


class StorageError(ActlakeError, OSError):
    """A storage operation failed permanently (after retries for transient errors)."""


class JobMismatchError(ActlakeError, ValueError):
    """A job other than the one that made the dataset tried to append to it (its rows would mix with the first)."""


class ConfigError(ActlakeError, ValueError):
    """A command's configuration is invalid; raised before any work starts."""


class InterventionError(ConfigError):
    """An intervention cannot be built or applied as asked (its message names the fix). Here, not in ``ingest``,
    because the kinds that raise it live in ``analysis``, which does not import ``ingest``."""


class NonFiniteError(ActlakeError, ValueError):
    """Activations (or an analysis' input) hold NaN or infinite values where finite ones are needed."""


class CorruptDataError(ActlakeError, OSError):
    """A file of a dataset does not match what its manifest says (damaged, truncated, swapped or edited).

    ``problem``: what is wrong, without the file name and the advice (for reports that list many files)."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message

    def __str__(self) -> str:  # OSError would print its (errno, strerror) form for two arguments
        return str(self.args[0])


class CorruptManifestError(CorruptDataError):
    """``manifest.json`` cannot be parsed or contradicts itself."""


class FormatVersionError(ActlakeError, ValueError):
    """The dataset was written in a format version this actlake does not read (or write)."""
