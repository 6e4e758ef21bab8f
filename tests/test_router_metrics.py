"""Curve metrics on hand-made curves whose answers are known."""
import math

import numpy as np
import pytest

from router.bench.metrics import Reference, apgr, area, cost_to_reach, cpt, curve_metrics, envelope, max_quality, quality_at_cost

REF = Reference(best_quality=0.8, best_cost=1.0, cheap_quality=0.4, cheap_cost=0.0)


def test_envelope_interpolates_the_pareto_frontier():
    pts = [(0.1, 0.5), (0.3, 0.7), (0.2, 0.4), (0.9, 0.85)]  # (0.2, 0.4) is dominated
    np.testing.assert_allclose(envelope(pts, [0.05, 0.1, 0.25, 0.3, 1.0]), [np.nan, 0.5, 0.65, 0.7, 0.85])
    # a dominated point never lifts the curve; equal costs keep the better point
    np.testing.assert_allclose(envelope([(0.1, 0.5), (0.1, 0.6), (0.5, 0.55)], [0.1, 0.3, 0.5]), [0.6, 0.6, 0.6])


def test_coarse_knob_sweep_reads_the_same_as_a_fine_one():
    # the random router is a straight line: 21 points must read as exactly as 1001
    # (a step envelope read it a whole step low: APGR 0.476, Q@5% = the cheapest model's)
    coarse = [(p, 0.4 + 0.4 * p) for p in np.linspace(0, 1, 21)]
    assert apgr(coarse, REF) == pytest.approx(0.5, abs=1e-3)
    assert quality_at_cost(coarse, REF, 0.05) == pytest.approx(100 * (0.4 + 0.4 * 0.05) / 0.8)
    assert cost_to_reach(coarse, REF, 0.95) == pytest.approx(90.0)


def test_quality_at_cost_and_parity():
    pts = [(0.0, 0.4), (0.05, 0.6), (0.25, 0.76), (0.3, 0.8), (0.6, 0.88)]
    assert quality_at_cost(pts, REF, 0.05) == pytest.approx(75.0)
    assert quality_at_cost(pts, REF, 0.25) == pytest.approx(95.0)
    assert cost_to_reach(pts, REF, 1.0) == pytest.approx(30.0)
    assert cost_to_reach(pts, REF, 0.95) == pytest.approx(25.0)
    assert max_quality(pts, REF) == pytest.approx(110.0)
    assert math.isnan(cost_to_reach([(0.0, 0.4)], REF, 1.0))


def test_random_router_line_has_apgr_one_half_and_linear_cpt():
    # mixing cheapest and best: quality rises linearly with cost → APGR = 0.5, CPT(x) = x
    line = [(p, 0.4 + 0.4 * p) for p in np.linspace(0, 1, 1001)]
    assert apgr(line, REF) == pytest.approx(0.5, abs=2e-3)
    assert cpt(line, REF, 0.5) == pytest.approx(50.0, abs=0.2)
    assert cpt(line, REF, 0.8) == pytest.approx(80.0, abs=0.2)


def test_perfect_step_router_recovers_whole_gap():
    step = [(0.0, 0.4), (0.0, 0.8)]
    assert apgr(step, REF) == pytest.approx(1.0)
    assert cpt(step, REF, 0.8) == pytest.approx(0.0)
    assert area(step, REF) == pytest.approx(100.0)


def test_best_single_point_only_counts_at_full_cost():
    m = curve_metrics([(1.0, 0.8)], REF)
    assert math.isnan(m["q_at_5pct_cost"]) and m["cost_parity"] == pytest.approx(100.0)
    assert m["apgr"] == pytest.approx(0.001, abs=1e-3)  # only the last grid point has a value
