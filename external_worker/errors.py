"""Errors the worker reports to its callers (CLI or wire) as code, message and hint."""


class WorkerError(Exception):
    """A failure the user can act on: `message` says what is wrong (naming the file or value),
    `hint` says what to do about it. `code` is a stable identifier for programs."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class DatasetError(WorkerError):
    """Bad or missing input data."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__("bad_dataset", message, hint)


class Cancelled(WorkerError):
    """The caller cancelled the job; the workspace holds the last checkpoint."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__("cancelled", message, "Run the same stage again to resume.")
