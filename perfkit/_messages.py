"""perfkit's messages: the ``"perfkit"`` logger, and warnings attributed to the user's line.

Events of a run (start, end, a failed flush) go to the logger; the application decides what is
shown (a library adds only a NullHandler). Warnings about the user's code or arguments (no peak
FLOP/s known for the device, a phase that ended inside its warm-up) go through :func:`warn`,
which points them at the first frame outside the perfkit package - the user's line, wherever in
perfkit the warning is raised.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

logger = logging.getLogger("perfkit")
logger.addHandler(logging.NullHandler())

#: Frames whose file lies under this folder are perfkit's own.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside the perfkit package."""
    if sys.version_info >= (3, 12):
        warnings.warn(message, category, skip_file_prefixes=(PACKAGE_DIR,))
    else:
        warnings.warn(message, category, stacklevel=user_stacklevel())


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the function calling this one point
    at the first frame outside the perfkit package."""
    frame = sys._getframe(2)  # the caller of the function that warns
    level = 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level
