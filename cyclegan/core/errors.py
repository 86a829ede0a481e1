"""Errors in what a user gave (options, files, datasets): a command prints their message as one
``error:`` line and exits 2, without a traceback. Light on purpose: the command line catches them
before it has imported anything heavy."""


class UserError(Exception):
    """The user's input is wrong; the message says what and where."""


class DataError(UserError, ValueError):
    """A dataset that cannot be trained on; the message names the folder or file."""
