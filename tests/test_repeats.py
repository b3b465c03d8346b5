"""Repeated runs: mean, std and the Student-t 95 % interval per metric, the group comparison and
the ``perfkit compare --fail-if-slower`` gate, on hand-worked numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats  # an mlperf-logging dependency, in the dev extra

from perfkit.analysis import compare_groups, regressions, repeat_stats
from perfkit.analysis._repeats import metric_stats, slower_test
from perfkit.analysis._student import t_ppf, t_ppf_python, t_sf_python, welch
from perfkit.cli import main
from tests.test_analysis import train_run

# t(0.975, 2) in closed form, (2p - 1) sqrt(2 / (4p(1 - p))) = 4.30265, over sqrt(3): the
# interval's half width per unit std for three runs
HALF_3 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)) / math.sqrt(3)


@pytest.mark.parametrize("implementation", [t_ppf_python, t_ppf])
def test_t_quantiles_match_closed_forms_and_scipy(implementation):
    # closed forms: df 1 is Cauchy, t = tan(pi (p - 1/2)); df 2: t = (2p - 1) sqrt(2 / (4p(1-p)))
    for p in (0.6, 0.975, 0.995, 0.025):
        assert implementation(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
        closed = (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))
        assert implementation(p, 2) == pytest.approx(closed, rel=1e-12)
    # the old table's 1.960 beyond 100 df was 1.2 % too narrow at df 101 (scipy: 1.98373)
    assert implementation(0.975, 101) == pytest.approx(1.983731002, rel=1e-9)
    with pytest.raises(ValueError, match="`df` to be a number > 0"):
        implementation(0.975, 0)
    with pytest.raises(ValueError, match=r"`p` to be a number in \(0, 1\)"):
        implementation(1.0, 3)


@settings(max_examples=300, deadline=None)
@given(
    p=st.floats(1e-9, 1 - 1e-9),
    df=st.one_of(st.floats(0.2, 1e4), st.integers(1, 10_000).map(float)),
)
def test_pure_python_t_matches_scipy(p, df):
    assert t_ppf_python(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8, abs=1e-12)
    t = scipy_stats.t.ppf(p, df)
    assert t_sf_python(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-8, abs=1e-300)


def test_metric_stats_by_hand():
    # 14, 16, 18: mean 16, squared deviations 4 + 0 + 4 = 8, std sqrt(8 / 2) = 2,
    # half width 4.302653 x 2 / sqrt(3) = 4.968275
    s = metric_stats([14.0, 16.0, 18.0])
    assert (s.n, s.mean, s.std) == (3, 16.0, 2.0)
    assert (s.ci_low, s.ci_high) == pytest.approx((16 - 2 * HALF_3, 16 + 2 * HALF_3))
    assert s.ci_high == pytest.approx(20.968275, abs=1e-6)
    one = metric_stats([5.0, math.nan])  # NaN left out; one value has no spread
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert metric_stats([]).n == 0


def test_welch_by_hand_and_against_scipy():
    # base 15, 16, 17 and new 19, 20, 21: variances 1, so each side's squared standard error
    # is 1/3; t = (20 - 16) / sqrt(2/3) = 4.89898; df = (2/3)^2 / (2 (1/3)^2 / 2) = 4
    result = welch([15.0, 16.0, 17.0], [19.0, 20.0, 21.0])
    assert result is not None
    assert (result.t, result.df) == pytest.approx((4 / math.sqrt(2 / 3), 4.0))
    ref = scipy_stats.ttest_ind([19, 20, 21], [15, 16, 17], equal_var=False, alternative="greater")
    assert result.p_greater == pytest.approx(ref.pvalue, rel=1e-9)
    assert welch([1.0], [2.0, 3.0]) is None  # one run: no variance
    flat = welch([5.0, 5.0], [6.0, 6.0])  # no spread, different means: certain
    assert flat is not None and flat.t == math.inf and flat.p_greater == 0.0


def welch_ref(base: list[float], new: list[float], factor: float) -> float:
    """scipy's one-sided Welch p-value that mean(new) > factor x mean(base)."""
    scaled = [factor * x for x in base]
    return float(scipy_stats.ttest_ind(new, scaled, equal_var=False, alternative="greater").pvalue)


def test_slower_needs_the_percentage_and_the_test():
    base = [15.0, 16.0, 17.0]
    # at 0 % the test is plain Welch: p = 0.0040 (t 4.899, df 4, hand-worked above)
    verdict = slower_test("train_wall_s", base, [19.0, 20.0, 21.0])
    assert verdict.p == pytest.approx(welch_ref(base, [19, 20, 21], 1.0), rel=1e-9)
    assert verdict.slower and verdict.worse_pct == pytest.approx(25.0)
    # at 10 %: is the time above 1.1 x base (16.5, 17.6, 18.7)? p = 0.024: slower
    at_10 = slower_test("train_wall_s", base, [19.0, 20.0, 21.0], pct=10)
    assert at_10.p == pytest.approx(welch_ref(base, [19, 20, 21], 1.1), rel=1e-9)
    assert at_10.p < 0.05 and at_10.slower
    # at 20 %: 25 % observed, but not significantly beyond 20 % (p = 0.17)
    at_20 = slower_test("train_wall_s", base, [19.0, 20.0, 21.0], pct=20)
    assert at_20.p > 0.05 and not at_20.slower
    # 25 % higher but noisy (13, 20, 27: std 7): p = 0.21 at 0 %, not beyond the noise
    noisy = slower_test("train_wall_s", base, [13.0, 20.0, 27.0])
    assert noisy.p == pytest.approx(welch_ref(base, [13, 20, 27], 1.0), rel=1e-9)
    assert noisy.p > 0.05 and not noisy.slower
    assert slower_test("train_wall_s", base, [13.0, 20.0, 27.0], alpha=0.25).slower
    # a throughput is slower when lower: base x 0.9 = 13.5, 14.4, 15.3 against 11, 12, 13
    low = slower_test("p_train", base, [11.0, 12.0, 13.0], pct=10)
    assert low.p == pytest.approx(welch_ref([-x for x in base], [-11, -12, -13], 0.9))
    assert low.slower
    assert not slower_test("p_train", base, [19.0, 20.0, 21.0]).slower  # faster
    # single runs: no variance, so the observed difference alone decides
    assert slower_test("e2e_time", [16.0], [17.0], pct=5).slower
    assert not slower_test("e2e_time", [16.0], [17.0], pct=7).slower
    assert math.isnan(slower_test("e2e_time", [16.0], [17.0]).p)
    assert slower_test("train_samples", base, base) is None  # no direction
    assert slower_test("p_train", [], base) is None


@pytest.mark.parametrize("n", [3, 5, 10])
def test_gate_error_rates_on_simulated_runs(n):
    """False-positive and false-negative rates of the gate (--fail-if-slower 2, alpha 0.05) on
    simulated groups of n runs whose throughput has 3 % noise (normal, as repeated runs on a
    busy machine spread), against known true shifts."""
    rng = np.random.default_rng(26 + n)
    trials = 2000

    def fail_rate(shift: float) -> float:
        base = rng.normal(100.0, 3.0, size=(trials, n))
        new = rng.normal(100.0 * (1 - shift), 3.0, size=(trials, n))
        verdicts = [slower_test("p_train", b, m, 2.0) for b, m in zip(base, new, strict=True)]
        return sum(v.slower for v in verdicts) / trials

    # False positives: a true slowdown of at most the 2 % floor fails at most alpha of the
    # time (the test is of "slower by more than 2 %"); 3 binomial standard errors of 0.05 at
    # 2000 trials: 0.015. Measured (seeds here): 0 %: 0.008 / 0.003 / 0.002 for n = 3 / 5 / 10,
    # 2 %: 0.034 / 0.045 / 0.049.
    assert fail_rate(0.0) <= 0.05 + 0.015
    assert fail_rate(0.02) <= 0.05 + 0.015
    # False negatives of a true 10 % slowdown (3.3 noise sigmas): measured 0.20 / 0.016 / 0
    # for n = 3 / 5 / 10 (the test's power grows with the runs).
    assert 1 - fail_rate(0.10) <= {3: 0.25, 5: 0.04, 10: 0.005}[n]


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
    assert found["e2e_time"][:2] == pytest.approx((26.0, 30.0))
    # e2e_time 25.5, 26, 26.5 against 29.5, 30, 30.5: is new above 1.1 x base? scipy's p
    ref = welch_ref([25.5, 26, 26.5], [29.5, 30, 30.5], 1.1)
    assert found["e2e_time"].p == pytest.approx(ref, rel=1e-9) and ref < 0.05
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
    assert "p_train" in err and "by more than 10% (Welch t = " in err and "alpha 0.05" in err
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
