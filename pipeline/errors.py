"""The one error family the CLI translates into a message and an exit code (design §9)."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure the user can act on: a one-line message and an optional next step."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputError(PipelineError):
    """Bad input or usage: a recipe, a file or a header that cannot be accepted."""

    exit_code = 2


class CheckFailed(PipelineError):
    """A check or a policy refused to go on."""

    exit_code = 1


class RemoteError(PipelineError):
    """The remote still failed after retries."""

    exit_code = 3
