"""Errors a user can cause. Every message says what happened and what to do about it."""

from __future__ import annotations


class ColorMNetError(Exception):
    """Base class of every error this package raises on purpose (bad input, bad file, cancellation)."""


class CheckpointError(ColorMNetError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the network."""


class InputError(ColorMNetError):
    """Frames, exemplars or options that cannot be colorized as given."""


class ResolutionError(InputError):
    """The processing size would not fit in memory; a smaller processing size is needed."""


class Cancelled(ColorMNetError):
    """The caller asked to stop (a progress callback returned False or raised this)."""


class Transaction:
    """Mixin for writers whose result must be all or nothing: leaving a `with` block normally calls
    close() (the result is kept), leaving it by an exception or a cancel calls abort() (nothing is left
    under the final name)."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
