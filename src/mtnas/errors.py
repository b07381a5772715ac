"""User-facing errors: each carries one paragraph naming the config key or file and what was expected.

The CLI catches `MtnasError` and prints its message without a traceback; anything else is a bug.
"""


class MtnasError(Exception):
    """Base class for errors caused by the user's input, not by mtnas."""


class ConfigError(MtnasError):
    """A configuration value is missing, unknown or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"Config error at `{key}`: {message}")


class DataError(MtnasError):
    """A dataset folder or file is missing or malformed."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"Data error in {self.path}: {message}")
