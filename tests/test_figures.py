"""The figure table (perfkit.figures) is the one declaration of every figure: the JSON Schema,
the docs, the summary, the records and the reports agree with it."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import perfkit
from perfkit.analysis._repeats import better
from perfkit.analysis._tables import LEADING_METRICS, SEED_COLUMNS
from perfkit.figures import (
    FIGURE_OF,
    FIGURES,
    PHASE_KINDS,
    PHASE_TOTALS,
    RESERVED_KEYS,
    Figure,
)
from perfkit.records import RECORD_NAMES, json_schema, read_records
from perfkit.summary import PhaseTotals
from tests.conftest import FakeClock
from tests.figure_docs import DOC, doc_section, schema
from tests.test_run_probes import CardProbe

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json_schema()
RECORDS_DOC = (REPO / "docs" / "records.md").read_text(encoding="utf-8")


def _schema_entry(key: str) -> dict[str, typing.Any] | None:
    summary = SCHEMA["$defs"]["summary"]
    if key in summary["properties"]:
        return dict(summary["properties"][key])
    for pattern, entry in summary["patternProperties"].items():
        if re.fullmatch(pattern, key):
            return dict(entry)
    return None


def test_the_docs_and_the_schema_are_written_from_the_table() -> None:
    """``python -m tests.figure_docs`` writes both; an edit of the table without it fails."""
    assert doc_section() in DOC.read_text(encoding="utf-8")
    assert schema(SCHEMA) == SCHEMA


def test_every_summary_figure_is_in_the_json_schema_and_the_docs() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    for key, figure in FIGURE_OF.items():
        entry = _schema_entry(key)
        assert entry is not None, key
        assert entry["description"].startswith(f"{figure.unit}: "), key
    schema_keys = set(SCHEMA["$defs"]["summary"]["properties"]) | set(
        SCHEMA["$defs"]["summary"]["patternProperties"]
    )
    assert len(schema_keys) == len(FIGURES)  # nothing in the schema the table lacks
    for figure in FIGURES:
        assert f"| `{figure.key.replace('{kind}', '<kind>')}` | {figure.unit} |" in RECORDS_DOC


def test_every_phase_total_is_a_record_of_the_schema_and_the_docs_with_its_unit() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    line = {"run_id": "r", "rank": 0, "phase": "train", "step": None, "value": 1.0, "t": 1.0}
    for total in PHASE_TOTALS:
        assert RECORD_NAMES[total.record][0] == total.unit
        validator.validate(line | {"name": total.record, "unit": total.unit})
        wrong = "J" if total.unit != "J" else "s"
        assert not validator.is_valid(line | {"name": total.record, "unit": wrong}), total
        assert f"| `{total.name}` | `{total.record}` | {total.unit} |" in RECORDS_DOC
        assert total.record in SCHEMA["properties"]["name"]["description"]


def test_phase_totals_hold_one_field_per_phase_total() -> None:
    fields = PhaseTotals._fields
    assert set(fields) == {"kind", "start_t", "end_t"} | {t.name for t in PHASE_TOTALS}
    hints = typing.get_type_hints(PhaseTotals)
    for total in PHASE_TOTALS:  # the type the records are read back as
        assert total.type.__name__ in str(hints[total.name]), total


def test_the_table_answers_the_reports_the_repeats_and_run_log() -> None:
    # Hand-written: what the FlagPerf case READMEs' tables show, in their order.
    assert SEED_COLUMNS["train"] == (
        "run", "config", "precision", "fix_hp", "e2e_time", "p_whole", "p_train", "p_core",
        "MFU", "mAP", "acc", "mem", "status",
    )  # fmt: skip
    assert SEED_COLUMNS["infer"] == (
        "run", "config", "precision", "fix_hp", "e2e_time", "p_val_whole", "p_val_core",
        "p_infer_whole", "p_infer_core", "MFU", "acc", "mAP", "mem", "status",
    )  # fmt: skip
    assert SEED_COLUMNS["none"] == (
        "run",
        "config",
        "precision",
        "fix_hp",
        "e2e_time",
        "mem",
        "status",
    )
    # the token figures (FlagPerf's LLM table) come between the throughputs and MFU
    assert tuple(m for m in LEADING_METRICS if not m.startswith("tps_"))[:9] == (
        "e2e_time", "p_whole", "p_train", "p_core", "p_val_whole", "p_val_core",
        "p_infer_whole", "p_infer_core", "MFU",
    )  # fmt: skip
    assert [better(k) for k in ("p_core", "MFU", "e2e_time", "val_wall_s", "train_samples")] == [
        1, 1, -1, -1, None,
    ]  # fmt: skip
    assert better("my_tokens_per_s_throughput") == 1 and better("loss") is None  # not figures
    assert {"p_whole", "val_io_fraction", "infer_step_time_p99_s", "mem"} <= RESERVED_KEYS
    assert "train_warmup_s" not in RESERVED_KEYS  # reserved=False in the table


def test_a_new_figure_is_one_entry() -> None:
    """An entry gives its summary keys, its per-phase total's name and when it is written."""
    tps = Figure("tps_{kind}", "1/s", "ratio", "ratio", "tokens / wall s", better=1)
    assert tps.summary_keys() == tuple(f"tps_{kind}" for kind in PHASE_KINDS)
    tokens = Figure("{kind}_tokens", "tokens", "sum", "sum", "tokens", record="phase_tokens")
    assert tokens.name == "tokens" and tokens.is_written(5, 0)
    energy = Figure("{kind}_e", "J", "sum", "sum", "e", record="phase_e", written="measured")
    assert not energy.is_written(None, 3) and energy.is_written(0.0, 0)


def test_every_key_a_run_writes_is_a_figure_and_its_records_follow_the_table(tmp_path) -> None:
    """A run with warm-up, a nested phase, an energy counter and MFU: every summary key but the
    logged ones is declared; summary.json validates against the schema; each phase wrote the
    records PHASE_TOTALS says, with its PhaseTotals values."""
    clock = FakeClock()
    card = CardProbe()
    with perfkit.Run(
        "figures",
        out_dir=tmp_path,
        device="cpu",
        clock=clock,
        probes=[card],
        sample_interval_s=0.01,
        flops_per_sample=1e9,
        peak_flops=1e12,
    ) as run:
        with run.phase("train", warmup_steps=1) as train:
            for _ in train.iterate([np.zeros((2, 1))] * 3):
                clock.advance(0.5)
        run.log(acc=0.5)
    summary = run.summary()
    assert set(summary) - {"acc"} <= set(FIGURE_OF)
    assert run.run_dir is not None
    on_disk = json.loads((run.run_dir / "summary.json").read_text())
    jsonschema.validate(on_disk, SCHEMA["$defs"]["summary"])
    records = {
        r["name"]: r for r in read_records(run.run_dir / "records.jsonl") if r["phase"] == "train"
    }
    (figures,) = (p.totals for p in [train.result()])
    for total in PHASE_TOTALS:
        value = getattr(figures, total.name)
        if total.is_written(value, figures.warmup_steps):
            assert records[total.record]["value"] == pytest.approx(value), total
            assert records[total.record]["unit"] == total.unit
        else:
            assert total.record not in records
    # 3 steps of 0.5 s and 2 samples, the first warm-up: 2 steady steps, 4 samples in 1.0 s
    assert (figures.steps, figures.samples, figures.warmup_steps) == (2, 4, 1)
    assert figures.wall_s == pytest.approx(1.0) and figures.warmup_s == pytest.approx(0.5)
