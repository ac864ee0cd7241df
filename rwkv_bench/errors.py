"""Errors the user can fix. The CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: unknown model spec, missing or corrupt file, empty text, bad flag values."""
