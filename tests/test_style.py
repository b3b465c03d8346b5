"""perfkit speaks with one voice: one logger, owned by perfkit/_messages.py, and argument errors in
the style of perfkit/checks.py - "Expected argument `x` to be <the expected form> but got <what
came>", a wrong type a TypeError (CONTRIBUTING.md). Scans the sources' syntax trees."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "perfkit"
SOURCES = sorted(PACKAGE.rglob("*.py"))
#: The one module that may create the "perfkit" logger.
LOGGER_OWNER = PACKAGE / "_messages.py"
#: Functions whose failed type tests are about data read from a file, not an argument's type:
#: a ValueError there is right.
NOT_ARGUMENT_TYPES = {"load_gt": "metrics/_coco_gt.py: the gt json holds no object"}
#: The old voice: "x must be ...", "x must have shape ...", "x must not repeat ...".
OLD_STYLE = re.compile(r"\bmust (?:not )?(?:be|have|hold|contain|repeat|name|give)\b")
#: The style: "Expected argument `x` to be ... but got ..." ("to have", "to map" ... too; two
#: arguments "`x` and `y`"; a callable argument's result "but it returned").
STYLE = re.compile(
    r"^Expected arguments? `[^`]+`(?: and `[^`]+`)? to \w+ .+ but (?:got|it returned) ", re.S
)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"


def _text(node: ast.expr) -> str | None:
    """The literal text of a message: a string, an f-string (``{}`` for each replacement field)
    or their implicit concatenation; None for anything computed."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None or right is None else left + right
    return None


def _type_checked(tree: ast.AST) -> set[ast.Raise]:
    """The raises a failed type test guards: ``if not isinstance(x, T): raise ...`` (in any
    part of the condition), outside the functions of NOT_ARGUMENT_TYPES."""
    exempt = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.name in NOT_ARGUMENT_TYPES
        for n in ast.walk(f)
    }
    guarded = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and id(node) not in exempt
            and any(
                isinstance(n, ast.UnaryOp)
                and isinstance(n.op, ast.Not)
                and isinstance(n.operand, ast.Call)
                and isinstance(n.operand.func, ast.Name)
                and n.operand.func.id == "isinstance"
                for n in ast.walk(node.test)
            )
        ):
            guarded.update(s for s in node.body if isinstance(s, ast.Raise))
    return guarded


def _raises(tree: ast.AST) -> Iterator[tuple[ast.Raise, str, ast.expr]]:
    """Each ``raise TypeError(<message>)`` / ``raise ValueError(<message>)``: the node, the
    exception's name and the message expression."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        func = node.exc.func
        if isinstance(func, ast.Name) and func.id in ("TypeError", "ValueError") and node.exc.args:
            yield node, func.id, node.exc.args[0]


def logger_calls(path: Path, tree: ast.AST) -> list[str]:
    """``getLogger(...)`` calls (``logging.getLogger`` or a bare name) outside _messages.py."""
    if path == LOGGER_OWNER:
        return []
    return [
        _where(path, node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger")
            or (isinstance(node.func, ast.Name) and node.func.id == "getLogger")
        )
    ]


def off_style(path: Path, tree: ast.AST) -> list[str]:
    """Raise messages not in the style: the old "must be" voice, a message that starts in the
    style but does not follow it, a ValueError where an ``isinstance`` test failed."""
    found = []
    type_checked = _type_checked(tree)
    for node, kind, message in _raises(tree):
        text = _text(message)
        if text is not None and OLD_STYLE.search(text):
            found.append(f"{_where(path, node)}: {kind} says 'must': {text!r}")
        elif text is not None and text.startswith("Expected argument") and not STYLE.match(text):
            found.append(f"{_where(path, node)}: {kind} not in the style: {text!r}")
        if kind == "ValueError" and node in type_checked:
            found.append(f"{_where(path, node)}: a wrong type raised as ValueError")
    return found


def _scan(check: object) -> list[str]:
    assert callable(check)
    return [hit for path in SOURCES for hit in check(path, ast.parse(path.read_text(), str(path)))]


def test_one_logger() -> None:
    assert _scan(logger_calls) == []


def test_one_error_style() -> None:
    assert _scan(off_style) == []


SAMPLES = {
    'logging.getLogger("perfkit")': (1, 0),
    'raise ValueError(f"k must be positive, got {k!r}")': (0, 1),
    'raise TypeError("x must not repeat")': (0, 1),
    'raise ValueError(f"{where} must be a dict, got {type(t).__name__}")': (0, 1),
    # a wrong type is a TypeError
    "if not isinstance(t, int):\n"
    '    raise ValueError(f"Expected argument `t` to be an int but got {t!r}")': (0, 1),
    "if not isinstance(t, int):\n"
    '    raise TypeError(f"Expected argument `t` to be an int but got {t!r}")': (0, 0),
    'raise ValueError("Expected argument `k` to be positive, got 0")': (0, 1),
    'raise ValueError(f"Expected argument `k` to be positive but got {k!r}")': (0, 0),
    'raise ValueError(f"Expected argument `k` without repeats but got {k!r}")': (0, 1),
    'raise ValueError("Expected arguments `a` and `b` to have one length but got 1 and 2")': (
        0,
        0,
    ),
    'raise ValueError("Expected argument `k` to be " + "positive but got 0")': (0, 0),
    'raise TypeError(f"Expected argument `k` to be an int but got {type(k).__name__}")': (0, 0),
    'raise wrong_type("k", "an int", k)': (0, 0),
    'raise ValueError(f"results[{i}] lacks {missing}")': (0, 0),
}


@pytest.mark.parametrize("source", SAMPLES)
def test_the_scan_finds_what_it_should(source: str) -> None:
    """The scan itself: each sample's (logger calls, off-style raises)."""
    path, tree = PACKAGE / "sample.py", ast.parse(source)
    assert (len(logger_calls(path, tree)), len(off_style(path, tree))) == SAMPLES[source]
    assert logger_calls(LOGGER_OWNER, tree) == []
