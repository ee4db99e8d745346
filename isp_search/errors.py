"""User-facing errors: one line, non-zero exit, no traceback (STYLE rule 11)."""


class UserError(Exception):
    """A mistake in the user's input (file, key, value). The CLI prints it as one line and exits with 2."""

    exit_code = 2
