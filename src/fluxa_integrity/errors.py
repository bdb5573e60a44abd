"""One error type for everything a user can get wrong or fix: what failed and what to do."""

from __future__ import annotations


class FluxaError(Exception):
    """An error the CLI reports without a traceback (exit code 2).

    ``hint`` tells the user what to do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self):
        # raised in a worker process (check workers, a Dask cluster) and re-raised here: the
        # default pickling rebuilds it from its message alone, dropping the hint and attributes
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls, args, state):
    err = Exception.__new__(cls, *args)
    err.args = args
    err.__dict__.update(state)
    return err
