"""Nothing in the repository points outside it: a clone has only what is committed.

Markdown links and ``../`` paths in .md and .py files must resolve, from the file's own folder,
to a file or folder inside the repository; nothing may name the project's ``shared/`` folder,
which lives beside the repository and is not part of a clone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                ".hypothesis", "build", "dist", "runs", "data"}  # fmt: skip
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PARENT_PATH = re.compile(r"(?<![\w./-])((?:\.\./)+[\w./-]*\w)")
SHARED = re.compile(r"(?<![\w-])shared(?:/|[\"']\s*/)")


def repository_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if any(
            p in SKIPPED_DIRS or p.startswith(".venv") or p.endswith(".egg-info")
            for p in parts[:-1]
        ):
            continue
        if path.suffix in (".md", ".py") and path.is_file():
            files.append(path)
    return sorted(files)


def leaks(path: Path, root: Path = REPO) -> list[str]:
    """Every reference in ``path`` that leaves the repository ``root`` or names nothing in it."""
    text = path.read_text(encoding="utf-8")
    targets = PARENT_PATH.findall(text)
    if path.suffix == ".md":
        targets += [
            t.split("#", 1)[0]
            for t in MARKDOWN_LINK.findall(text)
            if not re.match(r"[a-z]+:|#", t)  # URLs (https:, mailto:) and anchors
        ]
    found = {m.group(0) for m in SHARED.finditer(text)}
    for target in filter(None, targets):
        resolved = (path.parent / target).resolve()
        if not resolved.is_relative_to(root) or not resolved.exists():
            found.add(target)
    return sorted(found)


def test_the_scan_sees_the_repository():
    names = {p.relative_to(REPO).as_posix() for p in repository_files()}
    assert {"README.md", "docs/run.md", "perfkit/__init__.py", "tests/conftest.py"} <= names


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "see [the metrics](../shared/flagperf-metrics.md)",
            ["../shared/flagperf-metrics.md", "shared/"],
        ),
        ("(../shared/flagperf-metrics.md):", ["../shared/flagperf-metrics.md", "shared/"]),
        ('SAMPLES = ROOT.parents[2] / "shared" / "smi-samples"', ['shared" /']),
        ("[missing](docs/nothing.md) and [fine](docs/run.md#faults)", ["docs/nothing.md"]),
        ("[web](https://example.org/a) [anchor](#layout) shared memory", []),
    ],
)
def test_leaks_finds_what_a_clone_lacks(tmp_path, text, expected):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "run.md").write_text("# run\n")
    probe = tmp_path / "README.md"  # a file at the root of a repository in tmp_path
    probe.write_text(text, encoding="utf-8")
    assert leaks(probe, root=tmp_path) == expected


def test_no_file_links_outside_the_repository():
    """(This file is left out: its examples of leaks are leaks.)"""
    found = {}
    for path in repository_files():
        name = path.relative_to(REPO).as_posix()
        if path != Path(__file__) and (bad := leaks(path)):
            found[name] = bad
    assert found == {}
