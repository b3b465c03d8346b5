from collections.abc import Callable
from typing import Any

from perfkit.timing import window
from perfkit.timing.window import WindowOwner

class ComputeWindow(window.ComputeWindow):
    def __init__(self, phase: WindowOwner, mark: Callable[[], Any], host: bool) -> None: ...
