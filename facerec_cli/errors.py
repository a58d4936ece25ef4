"""Errors meant for the person at the terminal: the CLI prints the message as one red line and exits
with ``exit_code``."""


class UserError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base
