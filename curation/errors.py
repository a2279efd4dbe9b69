"""Typed errors: every failure the pipeline records carries a short machine-readable `kind`."""

from __future__ import annotations


class CurationError(Exception):
    """Base class. `kind` is the value stored in the `failures.kind` column."""

    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class VideoError(CurationError):
    """A file that cannot be used as a video. Kinds: not_found, not_a_file, empty_file, not_a_video,
    no_video_stream, unreadable, decode_error, too_short; and for hostile inputs: broken_symlink,
    symlink_loop, permission_denied, bad_file_name (a name that is not UTF-8), changed_during_read (size or
    mtime moved between discovery and the end of a read), too_large (a frame above curation.video.MAX_SIDE /
    MAX_PIXELS, refused before decoding), implausible_metadata (a warning: a frame count the file cannot
    hold, ignored)."""

    kind = "unreadable"


class ConfigError(CurationError):
    """A pipeline or stage setting is wrong or missing (e.g. a checkpoint path)."""

    kind = "config"


def error_kind(exc: BaseException) -> str:
    """The `failures.kind` for any exception: typed errors say it, others are named by class."""
    if isinstance(exc, CurationError):
        return exc.kind
    if isinstance(exc, MemoryError):
        return "out_of_memory"
    if isinstance(exc, PermissionError):
        return "permission_denied"
    return f"internal:{type(exc).__name__}"
