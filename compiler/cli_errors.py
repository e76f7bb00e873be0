"""The one error type of the `kiln` commands (its own module so that every command module
and ``python -m compiler.cli`` share the same class)."""


class CliError(Exception):
    """A user-facing error: printed as ``kiln: <message>`` on stderr, exit status ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
