"""Repeated runs: mean, std and the Student-t 95 % interval per metric, the group comparison and
the ``perfkit compare --fail-if-slower`` gate, on hand-worked numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as scipy_stats  # an mlperf-logging dependency, in the dev extra

from perfkit.analysis import compare_groups, regressions, repeat_stats
from perfkit.analysis._repeats import T_975, MetricStats, is_slower, metric_stats, t_975
from perfkit.cli import main
from tests.test_analysis import train_run

HALF_3 = 4.303 / math.sqrt(3)  # t(0.975, 2) / sqrt(3): the interval's half width per unit std


def test_t_table_matches_closed_forms_and_scipy():
    # closed forms: df 1 is Cauchy, t = tan(pi (p - 1/2)); df 2: t = (2p - 1) sqrt(2 / (4p(1-p)))
    p = 0.975
    assert T_975[1] == pytest.approx(math.tan(math.pi * (p - 0.5)), abs=5e-4)  # 12.7062
    assert T_975[2] == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), abs=5e-4)
    for df, value in T_975.items():  # the table has 3 decimals
        assert value == pytest.approx(scipy_stats.t.ppf(p, df), abs=5e-4), df
    assert t_975(35) == T_975[30]  # between rows: the smaller df, a wider interval
    assert t_975(10_000) == 1.960
    with pytest.raises(ValueError, match="`df` to be an int >= 1"):
        t_975(0)


def test_metric_stats_by_hand():
    # 14, 16, 18: mean 16, squared deviations 4 + 0 + 4 = 8, std sqrt(8 / 2) = 2,
    # half width 4.303 x 2 / sqrt(3) = 4.9687
    s = metric_stats([14.0, 16.0, 18.0])
    assert (s.n, s.mean, s.std) == (3, 16.0, 2.0)
    assert (s.ci_low, s.ci_high) == pytest.approx((16 - 2 * HALF_3, 16 + 2 * HALF_3))
    assert s.ci_high == pytest.approx(20.9687, abs=1e-4)
    one = metric_stats([5.0, math.nan])  # NaN left out; one value has no spread
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert metric_stats([]).n == 0


def stats(mean: float, half: float, n: int = 3) -> MetricStats:
    return MetricStats(n, mean, half / HALF_3, mean - half, mean + half)


def test_slower_needs_both_the_percentage_and_the_interval():
    base = stats(16.0, 1.0)  # [15, 17]
    # a time 25 % higher, interval [19, 21] wholly above: slower at 10 %, not at 30 %
    assert is_slower("train_wall_s", base, stats(20.0, 1.0), pct=10) is True
    assert is_slower("train_wall_s", base, stats(20.0, 1.0), pct=30) is False
    # 25 % higher but the interval [16.5, 23.5] overlaps [15, 17]: not beyond the noise
    assert is_slower("train_wall_s", base, stats(20.0, 3.5), pct=10) is False
    # a throughput is slower when lower: 12 in [11, 13] against [15, 17]
    assert is_slower("p_train", base, stats(12.0, 1.0), pct=10) is True
    assert is_slower("p_train", base, stats(20.0, 1.0), pct=0) is False  # faster
    # single runs: the value stands for the interval, so the percentage alone decides
    single = MetricStats(1, 16.0, math.nan, math.nan, math.nan)
    assert is_slower("e2e_time", single, MetricStats(1, 17.0, *[math.nan] * 3), pct=5) is True
    assert is_slower("e2e_time", single, MetricStats(1, 17.0, *[math.nan] * 3), pct=7) is False
    assert is_slower("train_samples", base, stats(1.0, 0.1), pct=0) is None  # no direction


# Train wall of train_run = 2 epochs x 4 steps x (0.5 s IO + c compute) = 4 + 8c seconds.
BASE_C = (1.4375, 1.5, 1.5625)  # train_wall_s 15.5, 16, 16.5: mean 16, std 0.5
NEW_C = (1.9375, 2.0, 2.0625)  # 19.5, 20, 20.5: mean 20 (+25 %), std 0.5


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("repeats")
    for label, compute in (("base", BASE_C), ("new", NEW_C)):
        for i, c in enumerate(compute):  # a folder each: run ids of one second are equal
            train_run(out / label / str(i), "resnet", compute_s=c)
    return {"base": out / "base", "new": out / "new"}


def test_group_statistics_and_comparison(groups):
    table = repeat_stats([groups["base"], groups["new"]], by=["name"])
    assert table.loc[("resnet", "train_wall_s"), "n"] == 6  # one configuration: 6 runs
    frame = compare_groups(groups["base"], groups["new"])
    wall = frame.loc["train_wall_s"]
    # half width 4.303 x 0.5 / sqrt(3) = 1.2422: base [14.758, 17.242], new [18.758, 21.242]
    assert (wall["baseline n"], wall["baseline mean"], wall["baseline std"]) == (3, 16.0, 0.5)
    assert wall["baseline ci_high"] == pytest.approx(16 + 0.5 * HALF_3)
    assert wall["new mean"] == pytest.approx(20.0) and wall["new/baseline"] == pytest.approx(1.25)
    assert wall["new slower"] is True
    # p_train = 64 samples / wall: base 64/15.5, 64/16, 64/16.5; new 64/19.5, 64/20, 64/20.5
    p_train = frame.loc["p_train"]
    assert p_train["baseline mean"] == pytest.approx((64 / 15.5 + 4 + 64 / 16.5) / 3)
    assert p_train["new mean"] == pytest.approx((64 / 19.5 + 3.2 + 64 / 20.5) / 3)
    assert p_train["new slower"] is True
    assert frame.loc["train_samples", "new slower"] is None  # a count: no direction
    # e2e_time = 14 + 8c: base mean 26, new 30 (+15.4 %); p_train -20 %
    found = regressions(groups["base"], groups["new"], 10, metrics=["e2e_time", "p_train"])
    assert found["e2e_time"] == pytest.approx((26.0, 30.0))
    assert set(found) == {"e2e_time", "p_train"}
    assert regressions(groups["base"], groups["new"], 16, metrics=["e2e_time"]) == {}
    assert regressions(groups["new"], groups["base"], 0) == {}  # base is faster than new
    with pytest.raises(ValueError, match="`metrics` to name throughputs"):
        regressions(groups["base"], groups["new"], 10, metrics=["train_samples"])
    with pytest.raises(ValueError, match="`pct` to be a number >= 0"):
        regressions(groups["base"], groups["new"], -1)


def test_cli_gate_exit_status_and_message(groups, capsys):
    base, new = str(groups["base"]), str(groups["new"])
    code = main(["compare", base, new, "--fail-if-slower", "10"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "p_train" in err and "beyond 10% and the 95% interval" in err
    assert "e2e_time 26 -> 30 (+15.4%)" in err
    header = out.splitlines()[0]
    assert "baseline mean" in header and "new slower" in header
    # the largest slowdown is train_compute_s = 8c: 12 -> 16, +33 %; at 40 % nothing fails
    assert main(["compare", base, new, "--fail-if-slower", "40"]) == 0
    assert main(["compare", base, new, "--fail-if-slower", "10", "--metric", "val_wall_s"]) == 0
    assert main(["compare", new, base, "--fail-if-slower", "0"]) == 0
    capsys.readouterr()
    code = main(["compare", base, new, "--format", "json"])  # several baseline runs: groups
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and rows["train_wall_s"]["baseline mean"] == 16.0
    code = main(["compare", base, new, "--fail-if-slower", "5", "--metric", "samples"])
    assert code == 2 and "`metrics` to name throughputs" in capsys.readouterr().err


def test_version(capsys):
    import perfkit

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"perfkit {perfkit.__version__}\n"
