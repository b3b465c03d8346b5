"""Every recorded tool output, with one value printed as NA / N/A / - / nothing, or with one
column dropped (its header name and the values under it): the parser still reads every device,
and every figure is the one it read from the unchanged output, or NaN - a missing field never
shifts into the next column and never raises.

The variants are made here, from the text (not with perfkit's own column finder): a numeric
word is replaced in place (padded to its width, so the columns stay aligned); a dropped column
is a header name blanked together with the words under it in the matching line of every device
block (box tables) or every row (column tables), or a csv field removed from every line.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from perfkit.probes import DeviceSample, parse
from tests.test_probes_layouts import CASES, body
from tests.test_probes_parsers import SAMPLES, nvidia_sections, sample_body

FIELDS = ("memory_used_bytes", "memory_total_bytes", "utilization_pct", "power_w", "temperature_c")


def recorded() -> dict[str, tuple[str, str]]:
    """label -> (tool, text) for every recorded output the parsers read."""
    out = {name: (name.split("/")[0], body(name)) for name in CASES}
    for tool, name in [
        ("cnmon", "cambricon_cnmon_v5.10.13_paddle_docs.txt"),
        ("npu-smi", "ascend_npu-smi_info_23.0.3_910B_paddle_docs.txt"),
        ("rocm-smi", "hygon_dcu_rocm-smi_paddle_docs.txt"),
        ("ixsmi", "iluvatar_ixsmi_BI-V150_ernie_docs.txt"),
        ("xpu_smi", "kunlunxin_xpu_smi_R300_paddle_docs.txt"),
        ("mx-smi", "metax_mx-smi_C550_ernie_docs.txt"),
        ("mthreads-gmi", "mthreads_gmi_S5000_doc.txt"),
    ]:
        out[name] = (tool, sample_body(name))
    amd = (SAMPLES / "amd_amd-smi_monitor_amdsmi_changelog.txt").read_text()
    for k, block in enumerate(re.split(r"^## block \d+\n\$ .*\n", amd, flags=re.M)[1:]):
        out[f"amd-smi block {k + 1}"] = ("amd-smi", block)
    mig = nvidia_sections("nvidia-smi_H100_MIG_captures.txt")
    for prefix, sections in (("", nvidia_sections()), ("MIG ", mig)):
        for section, text in sections.items():
            if section.endswith(("(default table)", "(-q)", "exporter parses)", "PCIe rx/tx)")):
                out[prefix + section] = ("nvidia-smi", text)
    csv = (SAMPLES / "nvidia_smi_query_gpu_csv_H100_projected.txt").read_text()
    for k, part in enumerate(re.split(r"^## \w+\n", csv, flags=re.M)[1:]):
        out[f"query-gpu csv projection {k}"] = ("nvidia-smi", part)
    return out


RECORDED = recorded()
# A number with an optional unit ("43", "69W", "19818MiB", "32.0_C", "100%"), not part of a
# longer word, version ("22.0.3") or bus id.
_NUMBER = re.compile(r"(?<![\w.:/\-\[])\d+(?:\.\d+)?(?:[A-Za-z%°_]+)?(?![\w.:\-\]])")
MISSING = ("NA", "N/A", "-", "")


def numbers(text: str) -> list[re.Match[str]]:
    """Numeric words that are not the first word of their line (a row's index: a row without
    one is not a device row in any layout)."""
    out = []
    for m in _NUMBER.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if re.sub(r"[\s|#]", "", text[line_start : m.start()]):
            out.append(m)
    return out


def substitute(text: str, m: re.Match[str], value: str, csv: bool) -> str:
    """``text`` with the word ``m`` replaced by ``value``, padded to its width (csv: as is)."""
    end = m.end()
    if not csv:
        extra = max(0, len(value) - len(m.group()))  # "N/A" over "0": take spaces to its right
        if extra and text[end : end + extra + 1] != " " * (extra + 1):
            value = "-"  # no room: the shortest marker
        else:
            end += extra
        value = value.ljust(end - m.start())
    return text[: m.start()] + value + text[end:]


def same_or_nan(original: list[DeviceSample], variant: list[DeviceSample]) -> None:
    assert len(variant) == len(original)
    for before, after in zip(original, variant, strict=True):
        for name in FIELDS:
            a, b = getattr(before, name), getattr(after, name)
            assert math.isnan(b) or b == a, (before.device, name, a, b)


def is_csv(text: str) -> bool:
    first = next(line for line in text.splitlines() if line.strip())
    return "," in first and any("." in name for name in first.split(","))


@pytest.mark.parametrize("label", sorted(RECORDED))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_missing_value_becomes_nan_in_its_own_column(label: str, data: st.DataObject) -> None:
    tool, text = RECORDED[label]
    original = parse(tool, text)
    candidates = numbers(text)
    m = data.draw(st.sampled_from(candidates), label="word")
    missing = data.draw(st.sampled_from(MISSING), label="missing")
    same_or_nan(original, parse(tool, substitute(text, m, missing, is_csv(text))))


def test_every_recorded_output_has_numbers_to_replace() -> None:
    assert all(numbers(text) for _, text in RECORDED.values())
    assert len(RECORDED) >= 25


_BORDER = re.compile(r"^[\s+|=-]*$")
_NAME = re.compile(r"[^\s|]+(?: [^\s|]+)*")  # a header name: words one space apart
# A value: words one space apart, the two sides of a slash however far ("0          / 970"),
# a comma-separated list ("0x7550,   45807" under rocm-smi's "IDs (DID, GUID)").
_VALUE = re.compile(r"[^\s|]+(?:(?: |\s*/\s*|(?<=,)\s+)[^\s|]+)*")
_MEASURED = re.compile(r"temp|pwr|power|mem|util|aicore|gpu%|vram|hbm", re.I)


def tables(text: str) -> list[tuple[int, list[list[int]]]]:
    """(header line, [the matching line of every device row / block]) per header line of the
    box table or column table in ``text``."""
    lines = text.splitlines()
    groups: list[list[int]] = []
    current: list[int] = []
    for i, line in enumerate(lines):
        if "|" in line and not _BORDER.match(line):
            current.append(i)
        elif current:
            groups.append(current)
            current = []
    header = next((g for g in groups if _MEASURED.search(" ".join(lines[i] for i in g))), None)
    if header is not None:  # box table: header block, then blocks of as many lines
        blocks = []
        for g in groups[groups.index(header) + 1 :]:
            if len(g) % len(header):
                break
            blocks += [g[k : k + len(header)] for k in range(0, len(g), len(header))]
        return [(h, [[b[k]] for b in blocks]) for k, h in enumerate(header)]
    for i, line in enumerate(lines):  # column table: a header line, then numbered rows
        names = _NAME.findall(line)
        if _MEASURED.search(line) and len(names) >= 3 and not re.match(r"^\s*\d", line):
            rows = [j for j in range(i + 1, len(lines)) if re.match(r"^\s*\d+\s", lines[j])]
            if rows:  # with the lines between header and rows (units)
                return [(i, [list(range(i + 1, rows[0])) + rows])]
    return []


def blank(line: str, start: int, end: int) -> str:
    """``line`` with every value that overlaps [start, end) replaced by spaces (a border line
    stays)."""
    if _BORDER.match(line):
        return line
    for m in reversed(list(_VALUE.finditer(line))):
        if m.start() < end and start < m.end():
            line = line[: m.start()] + " " * len(m.group()) + line[m.end() :]
    return line


def drop_table_column(text: str, header: int, rows: list[list[int]], name: re.Match[str]) -> str:
    lines = text.splitlines()
    lines[header] = (
        lines[header][: name.start()] + " " * len(name.group()) + lines[header][name.end() :]
    )
    for group in rows:
        for j in group:
            lines[j] = blank(lines[j], name.start(), name.end())
    return "\n".join(lines)


def drop_csv_field(text: str, k: int) -> str:
    out = []
    for line in text.splitlines():
        fields = line.split(",")
        out.append(",".join(fields[:k] + fields[k + 1 :]) if len(fields) > k else line)
    return "\n".join(out)


DROPPABLE = {
    label: (tool, text) for label, (tool, text) in RECORDED.items() if is_csv(text) or tables(text)
}


@pytest.mark.parametrize("label", sorted(DROPPABLE))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_dropped_column_leaves_the_others_alone(label: str, data: st.DataObject) -> None:
    tool, text = DROPPABLE[label]
    original = parse(tool, text)
    if is_csv(text):
        header = next(line for line in text.splitlines() if line.strip())
        k = data.draw(st.integers(1, header.count(",")), label="field")  # not the index
        variant = drop_csv_field(text, k)
    else:
        header_line, rows = data.draw(st.sampled_from(tables(text)), label="header line")
        names = list(_NAME.finditer(text.splitlines()[header_line]))
        name = data.draw(st.sampled_from(names[1:] or names), label="column")
        # npu-smi: without HBM-Usage, Memory-Usage is the device memory (as on a 310P)
        assume(not name.group().startswith("HBM"))
        variant = drop_table_column(text, header_line, rows, name)
    same_or_nan(original, parse(tool, variant))
