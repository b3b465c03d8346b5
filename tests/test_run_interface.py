"""Run and Phase talk through perfkit/run/_host.py's interface only: neither module, nor the
windows of timing/ and run/_io.py, reads a private name of another object."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "perfkit"
MODULES = ("run/_run.py", "run/_phase.py", "run/_io.py", "timing/window.py")


def crossings(source: str) -> list[str]:
    """Every ``x._name`` in ``source`` whose ``x`` is not ``self``."""
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]


@pytest.mark.parametrize("module", MODULES)
def test_private_names_are_read_on_self_only(module: str) -> None:
    assert crossings((ROOT / module).read_text(encoding="utf-8")) == []


def test_the_scan_sees_a_crossing() -> None:
    """The calls this interface replaced are found; the phase's own are not."""
    source = "self.ordinal = self.run._begin_phase(self)\nphase._finish(failed)\nself._resolve()"
    assert crossings(source) == ["1: self.run._begin_phase", "2: phase._finish"]
