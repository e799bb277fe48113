"""The project's own exceptions.

Every message says what went wrong, where (the file, key or database) and what to do
about it, because the reader is an operator looking at ``journalctl`` at night.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(IngestError):
    """The configuration cannot be used as given."""


class DatabaseError(IngestError):
    """A database could not be opened, migrated or written."""


class DatabaseBusyError(DatabaseError):
    """The database stayed locked by another process past the busy timeout (retryable)."""


class DatabaseReadOnlyError(DatabaseError):
    """The database file or its folder is not writable."""


class SchemaMissingError(DatabaseError):
    """A server database opened read-only holds no dsa110-ingest tables yet (nothing has
    created them): to a reader it is empty."""


class UVH5Error(IngestError):
    """A subband file cannot be indexed. ``reason`` is a short stable code for the DB."""

    reason = "unreadable"
    retryable = False

    def __init__(self, path: str, detail: str, fix: str = "") -> None:
        self.path = path
        self.detail = detail
        self.fix = fix
        msg = f"{path}: {detail}"
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)


class NotHDF5Error(UVH5Error):
    reason = "not_hdf5"


class TruncatedFileError(UVH5Error):
    reason = "truncated"


class MissingHeaderError(UVH5Error):
    reason = "no_header"


class MissingFieldError(UVH5Error):
    reason = "missing_field"


class InvalidHeaderError(UVH5Error):
    reason = "invalid_header"


class MisnamedFileError(UVH5Error):
    reason = "misnamed"


class FilePermissionError(UVH5Error):
    reason = "permission_denied"


class FileVanishedError(UVH5Error):
    """The file disappeared between being seen and being read (moved or deleted)."""

    reason = "vanished"


class FileLockedError(UVH5Error):
    """A writer still holds the HDF5 lock: try again later, never reject."""

    reason = "locked"
    retryable = True


class ConversionError(IngestError):
    """A group could not be converted to a Measurement Set.

    The class decides what the queue does next: a plain ``ConversionError`` is retried
    with backoff and counts against ``[convert] max_attempts``;
    :class:`PermanentConversionError` ends the group at once; a
    :class:`TransientConversionError` is retried without using up an attempt.
    """

    permanent = False  # True: no retry can fix it (the data are wrong)
    counts = True  # False: the node, not the group, is the cause; no attempt is used up
    kind = "error"  # stable name in events, logs and the worker's JSON

    def to_json(self) -> dict[str, object]:
        return {"error": str(self), "kind": self.kind}

    @staticmethod
    def from_json(d: dict[str, object]) -> ConversionError:
        """The error a worker process reported (``{"error": ..., "kind": ...}``)."""
        cls = {c.kind: c for c in _CONVERSION_ERRORS}.get(str(d.get("kind")), ConversionError)
        return cls(str(d.get("error", "unknown error")))


class ConversionTimeout(ConversionError):
    """The converter ran longer than ``[convert] timeout_seconds``."""

    kind = "timeout"


class PermanentConversionError(ConversionError):
    """The group's data cannot be converted as they are (time grids that do not overlap,
    disagreeing pointing, duplicate frequencies, unreadable or inconsistent files, a
    written MS that fails verification). Retrying cannot help: the group fails at once
    and the message says which file or subband is wrong."""

    permanent = True
    kind = "permanent"


class TransientConversionError(ConversionError):
    """A condition of the node, not of the group (output disk full, products DB locked,
    backend not installed yet): retried with backoff, never counted against the group."""

    counts = False
    kind = "node"


class OutputClaimLostError(TransientConversionError):
    """The output_dir's claim was taken over by another index while this conversion ran:
    its finished MS was discarded, never moved over the new owner's (retried, uncounted,
    should the claim come back)."""

    kind = "claim_lost"


_CONVERSION_ERRORS: tuple[type[ConversionError], ...] = (
    ConversionError,
    ConversionTimeout,
    PermanentConversionError,
    TransientConversionError,
    OutputClaimLostError,
)


class MigrationError(IngestError):
    """A legacy database could not be migrated; nothing was changed."""


class UnsafeHDF5Error(UVH5Error):
    """The file reaches outside itself (or loops) through HDF5 links or storage: never read."""

    reason = "unsafe_hdf5"


class SoftLinkError(UnsafeHDF5Error):
    reason = "soft_link"


class ExternalLinkError(UnsafeHDF5Error):
    reason = "external_link"


class ExternalStorageError(UnsafeHDF5Error):
    reason = "external_storage"


class VirtualDatasetError(UnsafeHDF5Error):
    reason = "virtual_dataset"


class OversizedChunkError(UnsafeHDF5Error):
    """A dataset is stored in chunks far larger than any real file's: reading one value
    would decompress a whole chunk (a compression bomb)."""

    reason = "oversized_chunks"


class HeaderTooLargeError(UVH5Error):
    """A header field would need more memory than any real header (a compression bomb)."""

    reason = "header_too_large"


class ConversionDataError(PermanentConversionError):
    """The group's input files themselves are unusable: trying again cannot help."""


class BackendUnavailableError(IngestError):
    """The configured conversion backend cannot run here (not installed): an install
    problem found before work starts, never retried."""


class InputFolderError(IngestError):
    """A folder given to index does not exist or is not a directory."""


class OutputClaimError(IngestError):
    """``[convert] output_dir`` is claimed by another index, or its claim file cannot be
    read or written: nothing is converted there (convert/ownership.py). ``kind`` is
    ``conflict``, ``unreadable``, ``unwritable``, ``busy`` (its lock stays held) or
    ``unknown`` (whether the claiming daemon runs cannot be told);
    ``detail`` what is wrong, short."""

    def __init__(self, message: str, kind: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail
