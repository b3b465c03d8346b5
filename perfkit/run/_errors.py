"""The error a Run or Phase raises when used in a way that cannot give honest numbers."""

from __future__ import annotations


class RunError(RuntimeError):
    """A Run or Phase used in a way that cannot give honest numbers."""
