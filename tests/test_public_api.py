"""The public surface is what the docs describe: nothing undocumented is exported."""

from __future__ import annotations

import re
from pathlib import Path

import perfkit.analysis

DOCS = Path(__file__).resolve().parents[1] / "docs"


def documented_functions(page: Path) -> set[str]:
    """The names in the first column of a page's "## Functions" table (`name(args)` cells)."""
    section = page.read_text(encoding="utf-8").split("## Functions", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`(\w+)\(", first_cell))
    return names


def test_analysis_exports_exactly_the_documented_functions():
    documented = documented_functions(DOCS / "analysis.md")
    assert len(documented) == 19  # the table parsed (a broken parse would give a small set)
    assert sorted(perfkit.analysis.__all__) == sorted(documented)
    for name in perfkit.analysis.__all__:
        assert callable(getattr(perfkit.analysis, name)), name


def test_analysis_has_no_public_name_outside_all():
    public = {
        name
        for name, value in vars(perfkit.analysis).items()
        if not name.startswith("_") and not isinstance(value, type(perfkit))  # submodules aside
    }
    public.discard("annotations")  # from __future__ import annotations
    assert public == set(perfkit.analysis.__all__)
