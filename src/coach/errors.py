"""Errors a user can cause or fix: each carries one clear message, shown instead of a traceback."""


class CoachError(Exception):
    """A failure with a message meant for the person running coach (no traceback needed)."""


class ModelMissingError(CoachError):
    """A model file is missing or does not match its pinned sha256."""


class IndexError_(CoachError):
    """The index is missing, corrupt, unreachable or built with another embedding model."""


class BackendUnavailableError(CoachError):
    """A chat backend cannot answer (server down, wrong key, model missing, crashed)."""


class BusyError(CoachError):
    """Every answering place and every place in line is taken: try again in `retry_after` seconds."""

    def __init__(self, in_flight: int, retry_after: int) -> None:
        super().__init__(f"The coach is busy answering {in_flight} questions right now; "
                         f"please try again in {retry_after} s.")
        self.retry_after = retry_after


class IndexDamagedError(IndexError_):
    """The embedded index's files are damaged or missing; `coach index` rebuilds it."""


class IndexUnreachableError(IndexError_):
    """The Chroma server holding the index does not answer."""
