"""Bad input refused by name, perfkit's own record names, loaders without a usable len(), and
perfkit's set-up kept out of the user's phases (issue 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import perfkit
from perfkit.analysis._tables import io_share, step_times
from perfkit.records import RECORD_NAMES, STEP_NAMES
from perfkit.run import active_run
from tests.conftest import read_step_rows

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ 7: reserved names


@pytest.mark.parametrize(
    "key",
    [*sorted(RECORD_NAMES), *STEP_NAMES, "memory_used_bytes", "power_w", "region/load"],
)
def test_run_log_refuses_every_record_name_perfkit_writes(tmp_path, clock, key):
    # Before issue 23 phase_samples=1.0 was taken, after which io_share / step_times raised
    # IntCastingNaNError and a killed run could not be rebuilt.
    with perfkit.Run("names", out_dir=tmp_path, device="cpu", clock=clock, probes=None) as run:
        with run.phase("train") as train:
            for _ in train.iterate([1, 2], samples=1):
                clock.advance(0.5)
                with pytest.raises(ValueError, match=f"run.log\\({key}=...\\): '{key}' is a"):
                    run.log(**{key: 1.0})
    assert run.run_dir is not None
    assert list(step_times(run.run_dir)["step_time"]) == [0.5, 0.5]  # the FakeClock's steps
    assert len(io_share(run.run_dir)) == 1


# ---------------------------------------------------------------------- 8: argument checks


class Unprintable(dict):
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"config": Unprintable(lr=object())}, TypeError, "config['lr'] = <object object"),
        ({"config": {"opt": {"betas": [0.9, float("nan")]}}}, TypeError, "config['opt']"),
        ({"name": "bad\udc80"}, ValueError, "argument `name`"),
        ({"out_dir": "runs\0x"}, ValueError, "argument `out_dir`"),
        ({"out_dir": b"runs"}, TypeError, "argument `out_dir`"),
    ],
)
def test_bad_run_arguments_are_named_in_a_short_message(tmp_path, kwargs, error, names):
    kwargs = {"name": "ok", "out_dir": tmp_path, **kwargs}
    with pytest.raises(error) as caught:
        perfkit.Run(**kwargs)
    assert names in str(caught.value) and len(str(caught.value)) < 600


def test_a_huge_config_with_one_bad_value_names_the_key_not_the_config(tmp_path):
    # Before issue 23: a message holding the whole config (7.9 MB for a million items).
    config = {f"k{i}": i for i in range(200_000)}
    config["k199999"] = {1, 2}
    with pytest.raises(TypeError, match=r"config\['k199999'\] = \{1, 2\} \(set\)") as caught:
        perfkit.Run("huge", out_dir=tmp_path, config=config)
    assert len(str(caught.value)) < 600


def test_an_out_dir_that_is_a_file_is_a_value_error_at_once(tmp_path):
    # Before issue 23: 100 tries at a new run id, then "could not create".
    target = tmp_path / "file"
    target.write_text("")
    run = perfkit.Run("onfile", out_dir=target, device="cpu", probes=None)
    with pytest.raises(ValueError, match="argument `out_dir` to be a folder"):
        run.start()
    assert active_run() is None and target.read_text() == ""


def test_numbers_too_large_for_a_float_are_value_errors_before_the_loop(tmp_path, clock):
    with perfkit.Run("big", out_dir=tmp_path, device="cpu", clock=clock, probes=None) as run:
        with pytest.raises(ValueError, match=r"run.log\(x=...\) needs a number a float can hold"):
            run.log(acc=0.5, x=10**400)
        with pytest.raises(TypeError, match="argument `step`"):
            run.log(step="3", acc=0.5)  # type: ignore[arg-type]
        with run.phase("train") as train:
            with pytest.raises(ValueError, match="argument `samples`"):
                train.iterate([1, 2], samples=10**400)
            # 10**400: no float holds it; 2**53 + 1: a float64 would round it (to 2**53)
            counts = {1: 10**400, 2: 2**53 + 1, 3: 3}
            for _ in train.iterate([1, 2, 3], samples=counts.__getitem__):
                clock.advance(0.1)
    summary = run.summary()
    assert "acc" not in summary  # nothing of a refused call is logged
    assert summary["train_samples"] == 3  # 0 + 0 + 3
    said = [fault for fault in summary["faults"] if "samples callable returned" in fault]
    assert len(said) == 2 and "9007199254740993" in said[1]


# ----------------------------------------------------------------------- 9: len() failures


class NoLength:
    def __init__(self, length_error: Exception | None, length: int = 0) -> None:
        self.error, self.length = length_error, length

    def __iter__(self):
        return iter([10, 20, 30])

    def __len__(self) -> int:
        if self.error is not None:
            raise self.error
        return self.length


@pytest.mark.parametrize(
    "loader",
    [NoLength(NotImplementedError()), NoLength(None, -1), NoLength(None, 2**80)],
    ids=["NotImplementedError", "negative", "huge"],
)
def test_a_loader_whose_len_fails_iterates_as_a_plain_for_loop(tmp_path, clock, loader):
    with perfkit.Run("nolen", out_dir=tmp_path, device="cpu", clock=clock, probes=None) as run:
        with run.phase("train", progress=True) as train:
            steps = train.iterate(loader, samples=1)
            with pytest.raises(TypeError):
                len(steps)  # type: ignore[arg-type]  # no length, as the loader has none
            seen = [batch for batch in steps]
    assert seen == [10, 20, 30] and run.summary()["train_steps"] == 3


# ------------------------------------------------------------------ 10: perfkit's set-up


SHORT_PHASE = """
import json, sys, time
import perfkit
assert "numpy" not in sys.modules  # as in a process that has not imported it yet
with perfkit.Run("short", out_dir=sys.argv[1], device="cpu", probes=None) as run:
    for kind in ("train", "val", "val"):
        with run.phase(kind) as phase:
            for _ in phase.iterate(range(10), samples=1):
                time.sleep(0.002)
print(json.dumps([[p["wall_s"] for p in run.summary()["phases"]], str(run.run_dir)]))
"""


def test_a_short_phase_wall_time_is_its_steps_not_perfkit_set_up(tmp_path):
    # Before issue 23 the first iterate() imported numpy (about 100 ms here, in the phase's
    # wall time but in no step) and each phase allocated its 2 MiB of step columns.
    script = tmp_path / "short.py"
    script.write_text(textwrap.dedent(SHORT_PHASE))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    walls, run_dir = json.loads(done.stdout)
    rows = read_step_rows(Path(run_dir) / "steps.bin")
    for ordinal, wall in enumerate(walls):
        steps = sum(r["step_time"] for r in rows if r["phase"] == ordinal)
        assert steps >= 10 * 0.002  # the sleeps, on the host clock
        assert wall - steps < 0.02  # the phase's time outside its steps: enter, leave, bound
