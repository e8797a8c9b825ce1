"""Errors a user can fix: reported as one line naming what, where and how, never as a traceback.

Standard library only: the parent and the worker both raise them.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (an override, a config file, a path): one line, no traceback."""


class SpecError(UserError, ValueError):
    """A configuration value that cannot make a valid job."""


class DataError(UserError, ValueError):
    """Input data that cannot be used; the message names the file, row and field."""
