"""perfkit's messages: warnings point at the user's line, events go to the "perfkit" logger."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import perfkit
from perfkit._messages import PACKAGE_DIR, user_stacklevel
from perfkit.flops import count, peak_flops
from perfkit.metrics import TopK


def test_the_no_peak_warning_of_a_run_points_at_the_users_with(tmp_path) -> None:
    with pytest.warns(UserWarning, match="no peak FLOP/s known") as caught:
        with perfkit.Run(  # the run ends, and computes its MFU, here
            "nopeak",
            out_dir=tmp_path,
            device="cpu",
            probes=None,
            flops_per_sample=1e9,
            peak_flops="table",  # the table's figure only: none for a CPU
        ) as run:
            with run.phase("infer") as infer:
                for _ in infer.iterate([0, 1], samples=1):
                    pass
    assert caught[0].filename == __file__
    assert "mfu_note" in run.summary()


def test_warnings_raised_deep_in_perfkit_point_here() -> None:
    with pytest.warns(UserWarning, match="no peak") as caught:
        peak_flops("Mystery GPU", "fp16")
    model = torch.nn.Linear(2, 2)  # in training mode
    with pytest.warns(UserWarning, match="training mode") as counted:
        count(model, torch.zeros(1, 2))
    with pytest.warns(UserWarning, match="before any update") as computed:
        TopK().compute()
    for record in (*caught, *counted, *computed):
        assert record.filename == __file__, record.message


def test_the_stacklevel_walks_out_of_the_package() -> None:
    # Called from here (outside perfkit) the level is the caller's: 2.
    assert user_stacklevel() == 2
    assert PACKAGE_DIR.endswith("perfkit/") and perfkit.__file__.startswith(PACKAGE_DIR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peak_flops("Mystery GPU", "fp16")
    assert not caught[0].filename.startswith(PACKAGE_DIR)


def test_a_run_logs_its_start_and_end_to_the_perfkit_logger(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="perfkit"):
        with perfkit.Run("logged", out_dir=tmp_path, device="cpu", probes=None) as run:
            pass
    messages = [r.getMessage() for r in caplog.records if r.name == "perfkit"]
    assert messages == [
        f"run {run.run_id} started on cpu; records in {run.run_dir}",
        f"run {run.run_id} ended (ok) in {run.run_dir}",
    ]


def test_perfkit_prints_nothing_by_itself(tmp_path, capsys) -> None:
    with perfkit.Run("quiet", out_dir=tmp_path, device="cpu", probes=None) as run:
        with run.phase("train", progress=None) as train:  # stderr is not a terminal here
            for _ in train.iterate([0, 1], samples=1):
                pass
    assert capsys.readouterr() == ("", "")
    assert logging.getLogger("perfkit").handlers  # a NullHandler: no "no handler" fallback
