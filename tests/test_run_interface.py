"""No private name crosses between perfkit's modules: Run and Phase talk through
perfkit/run/_host.py's interface, the windows get their phase's calls as callables, and every
other module (integrations, sinks, generation, flops, run/'s helpers) uses public names or
callables handed in."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import perfkit
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parents[1] / "perfkit"
SOURCES = sorted(ROOT.rglob("*.py"))
#: ``x._name`` found by the scan that is no crossing, each with its reason.
ALLOWED = {
    # SizedSteps.__new__ sets the slot of the instance it has just made (its own class's).
    ("run/_loop.py", "steps._length"),
}


def _defined_private_names(paths: list[Path]) -> frozenset[str]:
    """Private names perfkit defines on its objects: methods, class attributes and attributes
    set on ``self`` (third-party private names, such as torch's ``op._schema``, are not
    perfkit's to police)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.add(item.target.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and isinstance(node.ctx, ast.Store)
            ):
                names.add(node.attr)
    return frozenset(n for n in names if n.startswith("_") and not n.startswith("__"))


PRIVATE = _defined_private_names(SOURCES)


def crossings(source: str, private: frozenset[str] = PRIVATE) -> list[str]:
    """Every ``x._name`` in ``source`` whose ``_name`` is one of perfkit's private names and
    whose ``x`` is not ``self``, ``cls``, ``super()`` or an imported module."""
    tree = ast.parse(source)
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr in private):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"} | imported:
            continue
        if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: int(line.split(":")[0]))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_private_names_are_read_on_self_only(path: Path) -> None:
    module = str(path.relative_to(ROOT))
    found = crossings(path.read_text(encoding="utf-8"))
    assert [f for f in found if (module, f.split(": ", 1)[1]) not in ALLOWED] == []


def test_the_scan_sees_a_crossing() -> None:
    """The calls the interfaces replaced are found; a module's own, self's and third-party
    private names are not."""
    source = (
        "import torch\n"
        "self.ordinal = self.run._begin_phase(self)\nphase._finish(failed)\nself._resolve()\n"
        "run._write_meta()\ntorch._ops\nop._schema\nsuper()._count(1)\n"
    )
    private = frozenset({"_begin_phase", "_finish", "_resolve", "_write_meta", "_count"})
    assert crossings(source, private) == [
        "2: self.run._begin_phase",
        "3: phase._finish",
        "5: run._write_meta",
    ]
    assert {"_write_meta", "_finish", "_active_phase", "_dir"} <= PRIVATE


def test_leaf_modules_do_not_import_the_run_layer() -> None:
    """flops, probes, metrics, timing and the leaf modules import nothing of perfkit.run."""
    leaves = [p for p in SOURCES if p.parent.name in {"flops", "probes", "metrics", "timing"}]
    for path in [*leaves, ROOT / "devices.py", ROOT / "figures.py", ROOT / "summary.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("perfkit.run"), (path, node.module)


def test_the_public_calls_that_replaced_the_crossings(tmp_path: Path) -> None:
    """Run.set_config writes meta.json again while running; Phase.end ends the phase, the
    step a loop was left in counted or dropped."""
    clock = FakeClock()
    with perfkit.Run("calls", out_dir=tmp_path, clock=clock, probes=None, config={"bs": 2}) as run:
        run.set_config({**run.config, "lr": 0.1})
        meta = json.loads((run.run_dir / "meta.json").read_text())
        assert meta["config"] == {"bs": 2, "lr": 0.1}
        with pytest.raises(TypeError, match="`config`"):
            run.set_config([1])  # type: ignore[arg-type]
        for drop, counted in ((False, 2), (True, 1)):
            phase = run.phase("train")
            loop = iter(phase.__enter__().iterate(range(3), samples=1))
            next(loop)
            next(loop)  # the second step is under way
            phase.end(drop_open_step=drop)
            phase.end()  # once ended: nothing
            assert phase.steps == counted
