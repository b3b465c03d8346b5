"""Write the figure table's sections of docs/records.md ("## Figures") and of
perfkit/record.schema.json (the phase records' units, ``$defs.summary``) from perfkit/figures.py.

Run after adding or changing a figure: ``python -m tests.figure_docs`` (from the repository
root);
tests/test_figures.py holds both files to the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perfkit.figures import FIGURES, PHASE_KINDS, PHASE_TOTALS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "records.md"
SCHEMA = ROOT / "perfkit" / "record.schema.json"
#: JSON types of the summary values by unit (numbers otherwise; null where not finite).
TYPES = {
    "text": {"type": ["string", "null"]},
    "list": {"type": "array"},
    "object": {"type": "object"},
}

INTRO = """## Figures: the figure table (`perfkit.figures`)

Every figure perfkit reports is declared once, in `perfkit/figures.py`; the Run, the records,
the JSON Schema, analysis, the rebuild of a killed run, the reports, the repeats and the MLPerf
log all read it, and a test holds this page and
[record.schema.json](../perfkit/record.schema.json) to it (`python -m tests.figure_docs` writes
both from the table). `<kind>` is each of train, val, infer.

Per-phase totals (`PHASE_TOTALS`, the figures with a record): one rank's figure for one phase,
written as a record when the phase ends, a column of `io_share()` and a key of the summary's
`phases`. Over the phases of a kind they add up; over ranks, `sum` takes every rank's, `max` the
largest rank's (the slowest rank's seconds, the most steps any rank took).

| total | record | unit | over ranks | written | MLPerf |
|---|---|---|---|---|---|
"""
FIGURES_INTRO = """
Summary figures (`FIGURES`). *reserved*: `run.log` refuses the name; *better*: which way
the repeats' regressions read it (+1 higher, -1 lower); *report*: the seed tables showing it
as a column. Over phases: `sum`, `window` (p_whole's), `steps` (over their steps), `ratio` (of
other figures), `run`; over ranks: `sum`, `max`, `ratio`, `spread`, `rank 0`, `device max`
(the highest device of every node), `run`.

| key | unit | over phases | over ranks | reserved | better | report | meaning |
|---|---|---|---|---|---|---|---|
"""


def _kindless(text: str) -> str:
    return text.replace("{kind}", "<kind>")


def doc_section() -> str:
    """The "## Figures" section of docs/records.md."""
    rows = [INTRO]
    for t in PHASE_TOTALS:
        mllog = ", ".join(f"`{key}` ({kind})" for kind, key in t.mllog.items())
        rows.append(
            f"| `{t.name}` | `{t.record}` | {t.unit} | {t.over_ranks} | {t.written} | {mllog} |\n"
        )
    rows.append(FIGURES_INTRO)
    for f in FIGURES:
        better = "" if f.better is None else f"{f.better:+d}"
        reserved = "yes" if f.reserved else "no"
        rows.append(
            f"| `{_kindless(f.key)}` | {f.unit} | {f.over_phases} | {f.over_ranks} | "
            f"{reserved} | {better} | {', '.join(f.report)} | {_kindless(f.about)} |\n"
        )
    return "".join(rows) + "\n"


def schema(old: dict[str, Any]) -> dict[str, Any]:
    """``old`` (record.schema.json) with the phase records' unit rules and $defs.summary."""
    by_unit: dict[str, list[str]] = {"s": ["phase_start"]}
    for t in PHASE_TOTALS:
        by_unit.setdefault(t.unit, []).append(t.record)
    rules = [r for r in old["allOf"] if "required" not in r["if"]]  # the hand-written ones
    for unit, names in by_unit.items():
        rules.append(
            {
                "if": {"properties": {"name": {"enum": names}}, "required": ["name"]},
                "then": {"properties": {"unit": {"const": unit}}},
            }
        )
    properties, patterns = {}, {}
    for f in FIGURES:
        entry = TYPES.get(f.unit, {"type": ["number", "null"]}) | {
            "description": _kindless(f"{f.unit}: {f.about}")
        }
        if "{kind}" in f.key:
            patterns[f"^({'|'.join(PHASE_KINDS)}){f.key.replace('{kind}', '')}$"] = entry
        else:
            properties[f.key] = entry
    new = old | {"allOf": rules}
    new["$defs"]["summary"] |= {"properties": properties, "patternProperties": patterns}
    return new


def _leaf(obj: dict[str, Any] | list[Any]) -> bool:
    values = obj.values() if isinstance(obj, dict) else obj
    return all(
        not isinstance(v, dict)
        and not (isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v))
        for v in values
    )


def dump(obj: Any, indent: int = 0) -> str:
    """JSON in the file's style: an object or list on one line where it is short or flat."""
    flat = json.dumps(obj)
    if (
        not isinstance(obj, (dict, list))
        or len(flat) + indent <= 96
        or (_leaf(obj) and len(flat) < 400)
    ):
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, list):
        items = [pad + dump(v, indent + 2) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(k)}: {dump(v, indent + 2)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index("## Figures: the figure table"), text.index("## Reading")
    DOC.write_text(text[:start] + doc_section() + text[end:], encoding="utf-8")
    old = json.loads(SCHEMA.read_text(encoding="utf-8"))
    SCHEMA.write_text(dump(schema(old)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
