"""Multi-fidelity promotion: the rungs, the multi-objective ranking, asynchronous successive
halving, and rebuilding the scheduler from stored records."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tnas.search.fidelity import AshaScheduler, Record, Rungs, best, hv_contributions
from tnas.search.pareto import hypervolume

ACC_LATENCY = ["max", "min"]


@pytest.mark.parametrize(
    ("min_steps", "max_steps", "eta", "steps"),
    [
        (100, 2700, 3, (100, 300, 900, 2700)),
        (100, 2000, 3, (100, 300, 900, 2000)),
        (100, 1000, 2, (100, 200, 400, 800, 1000)),
        (50, 50, 4, (50,)),
        (1, 2, 3, (1, 2)),
    ],
    ids=["exact", "capped", "eta-2-capped", "one-rung", "capped-below-eta"],
)
def test_rung_steps(min_steps, max_steps, eta, steps):
    rungs = Rungs(min_steps, max_steps, eta)
    assert rungs.steps == steps
    assert len(rungs) == len(steps) and rungs.top == len(steps) - 1
    assert [rungs.rung_of(s) for s in steps] == list(range(len(steps)))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((0, 100, 3), "min_steps must be >= 1, got 0"),
        ((100, 2700, 1), "eta must be >= 2, got 1"),
        ((300, 100, 3), r"max_steps \(100\) must be >= min_steps \(300\)"),
        ((100.0, 2700, 3), "min_steps must be an integer"),
        ((100, 2700, True), "eta must be an integer"),
    ],
    ids=["min-zero", "eta-one", "max-below-min", "float-steps", "bool-eta"],
)
def test_bad_rungs_are_refused_in_one_line(arguments, message):
    with pytest.raises(ValueError, match=message) as info:
        Rungs(*arguments)
    assert "\n" not in str(info.value)


def test_a_step_count_off_the_rungs_is_refused():
    with pytest.raises(ValueError, match="250 steps is not a rung"):
        Rungs(100, 2700, 3).rung_of(250)


def brute_force_contributions(points, reference):
    total = hypervolume(points, reference)
    return np.array(
        [total - hypervolume(np.delete(points, i, axis=0), reference) for i in range(len(points))]
    )


@pytest.mark.parametrize("m", [2, 3])
def test_hv_contributions_match_leaving_each_point_out(m):
    generator = np.random.default_rng(m)
    for _ in range(20):
        points = generator.random((8, m))
        from tnas.search.pareto import pareto_front

        front = points[pareto_front(points)]
        front = np.concatenate([front, front[:1]])  # a duplicate: both then contribute 0
        reference = np.full(m, 1.1)
        fast = hv_contributions(front, reference)
        assert np.allclose(fast, brute_force_contributions(front, reference))
        assert fast[0] == fast[-1] == 0


def test_best_takes_whole_fronts_first():
    values = [[0.5, 12.0], [0.9, 10.0], [0.6, 11.0], [0.8, 5.0], [0.55, 11.5], [0.7, 8.0]]
    # front 0: rows 1, 3; front 1: row 5; then 2, 4, 0
    assert sorted(best(values, ACC_LATENCY, 2)) == [1, 3]
    assert best(values, ACC_LATENCY, 3)[2] == 5
    assert best(values, ACC_LATENCY, 0) == []
    assert sorted(best(values, ACC_LATENCY, 10)) == list(range(6))


def test_ties_within_a_front_go_to_the_larger_hypervolume_contribution():
    # A, B, C are mutually non-dominated; C nearly duplicates A, so one of them adds little.
    a, b, c = [0.90, 10.0], [0.80, 5.0], [0.89, 9.9]
    dominated = [[0.5, 12.0], [0.6, 11.0], [0.55, 11.5]]
    values = [a, b, c, *dominated]
    assert best(values, ACC_LATENCY, 2) == [1, 0]  # B (isolated) first, then A; C is cut


def test_a_front_is_thinned_greedily_so_a_duplicate_pair_keeps_one():
    # Rows 0 and 1 are equal: each alone contributes 0, yet one of them must stay.
    values = [[0.9, 10.0], [0.9, 10.0], [0.8, 5.0], [0.5, 12.0], [0.6, 11.0], [0.55, 11.5]]
    assert sorted(best(values, ACC_LATENCY, 2)) == [0, 2]  # the smaller row of the pair


def single_objective(eta: int = 3) -> AshaScheduler:
    return AshaScheduler(Rungs(1, 9, eta), ["min"])


def test_promotes_as_results_arrive_without_waiting_for_the_rung():
    asha = single_objective()
    asha.report(0, 0, [0.5])
    asha.report(1, 0, [0.4])
    assert asha.promotable(0) == [] and asha.next_promotion() is None
    asha.report(2, 0, [0.6])
    assert asha.promotable(0) == [1]  # floor(3 / 3) = 1 place, while nothing else has run
    assert asha.promote(1) == 1 and asha.pending() == {1: 1}
    asha.report(3, 0, [0.1])
    assert asha.promotable(0) == [3]  # trial 1 keeps its promotion; 3 takes the one place
    asha.report(4, 0, [0.2])
    asha.report(5, 0, [0.3])
    assert asha.top(0) == [3, 4] and asha.promotable(0) == [3, 4]
    asha.report(1, 1, [0.35])
    assert asha.pending() == {} and asha.rung_of(1) == 1


def test_next_promotion_prefers_the_highest_rung():
    asha = single_objective()
    for trial, loss in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]):
        asha.report(trial, 0, [loss])
    assert asha.promotable(0) == [0, 1, 2]
    for trial in (0, 1, 2):
        asha.promote(trial)
    for trial, loss in [(0, 0.05), (1, 0.01), (2, 0.02)]:
        asha.report(trial, 1, [loss])
    assert asha.next_promotion() == (1, 1)  # rung 1's best before anything of rung 0
    asha.promote(1)
    assert asha.next_promotion() is None  # rung 0 has promoted its 3 of 9
    asha.report(1, 2, [0.001])
    assert asha.finished() == [1] and asha.promotable(2) == []
    assert asha.trained_steps() == 9 + 3 + 3 + 6 * 1  # trial 1 to 9 steps, 0 and 2 to 3


def test_multi_objective_promotion_order():
    asha = AshaScheduler(Rungs(100, 900, 3), ACC_LATENCY)
    arrivals = [
        (10, [0.50, 12.0]),
        (11, [0.90, 10.0]),
        (12, [0.60, 11.0]),  # 1 place: trial 11 or 13 (front 0), 11 by contribution
        (13, [0.80, 5.0]),
        (14, [0.55, 11.5]),
        (15, [0.89, 9.9]),  # 2 places: front 0 is 11, 13, 15; 15 nearly duplicates 11
    ]
    seen = []
    for trial, values in arrivals:
        asha.report(trial, 0, values)
        seen.append(asha.promotable(0))
    assert seen[:2] == [[], []]
    assert len(seen[2]) == 1 and seen[2][0] in (11, 13)
    assert seen[-1] == [13, 11]


def test_stopped_trials_are_never_promoted_but_still_count():
    asha = single_objective()
    for trial, loss in enumerate([0.1, 0.2, 0.3]):
        asha.report(trial, 0, [loss])
    asha.stop(0)
    assert asha.promotable(0) == [] and asha.top(0) == [0]
    with pytest.raises(ValueError, match="is stopped"):
        asha.promote(0)
    assert asha.paused() == [1, 2]


def test_a_promoted_trial_that_fails_is_no_longer_pending():
    asha = single_objective()
    for trial, loss in enumerate([0.1, 0.2, 0.3]):
        asha.report(trial, 0, [loss])
    asha.promote(0)
    asha.stop(0)
    assert asha.pending() == {} and asha.next_promotion() is None


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda a: a.report(0, 1, [0.1]), "without a promotion"),
        (lambda a: a.report(0, 0, [0.2]), "already reported at rung 0"),
        (lambda a: a.report(1, 0, [float("nan")]), "non-finite"),
        (lambda a: a.report(1, 0, [0.1, 0.2]), "2 values for 1 objectives"),
        (lambda a: a.report(1, 3, [0.1]), "rung 3 does not exist"),
        (lambda a: a.promote(9), "has reported nothing"),
    ],
    ids=["unpromoted-rung", "twice", "nan", "too-many-values", "no-such-rung", "unknown-trial"],
)
def test_inconsistent_reports_are_refused(action, message):
    asha = single_objective()
    asha.report(0, 0, [0.1])
    with pytest.raises(ValueError, match=message):
        action(asha)


def test_directions_are_checked():
    with pytest.raises(ValueError, match="each must be 'min' or 'max'"):
        AshaScheduler(Rungs(1, 9, 3), ["up"])


def simulate(seed: int, trials: int = 60, slots: int = 3) -> AshaScheduler:
    """An asynchronous run: `slots` workers; a free worker promotes if it can, else starts a
    new trial; results come back in random order; a few continuations fail (stopped); it is
    cut off with work in flight, like a crashed driver."""
    rng = random.Random(seed)
    asha = AshaScheduler(Rungs(1, 27, 3), ACC_LATENCY)
    running: list[tuple[int, int]] = []
    started = 0
    while started < trials:
        while len(running) < slots:
            promotion = asha.next_promotion()
            if promotion is not None:
                running.append((promotion[0], asha.promote(promotion[0])))
            else:
                running.append((started, 0))
                started += 1
        trial, rung = running.pop(rng.randrange(len(running)))
        if rung > 0 and rng.random() < 0.1:
            asha.stop(trial)
            continue
        accuracy = rng.random() * (1 + rung) / 4
        asha.report(trial, rung, [accuracy, rng.choice([1.0, 2.0, 3.0, 4.0 * rng.random()])])
    return asha


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_state_is_rebuilt_from_its_records(seed):
    live = simulate(seed)
    records = live.records()
    assert any(record.values is None for record in records)  # promotions in flight
    stored = [(r.trial, r.rung, None if r.values is None else list(r.values)) for r in records]
    random.Random(seed).shuffle(stored)  # storage need not keep arrival order
    again = AshaScheduler.from_records(live.rungs, ACC_LATENCY, stored, stopped=live.stopped)
    assert again.state() == live.state()
    assert again.pending() == live.pending()
    assert [again.promotable(r) for r in range(3)] == [live.promotable(r) for r in range(3)]
    assert again.next_promotion() == live.next_promotion()
    for trial, rung in live.pending().items():  # the resumed driver finishes them alike
        for scheduler in (live, again):
            scheduler.report(trial, rung, [0.5, 1.0])
    assert again.state() == live.state()


def test_results_in_any_order_give_the_same_ranking():
    values = {trial: [random.Random(trial).random(), float(trial % 4)] for trial in range(12)}
    orders = [sorted(values), sorted(values, reverse=True)]
    tops = []
    for order in orders:
        asha = AshaScheduler(Rungs(1, 9, 3), ACC_LATENCY)
        for trial in order:
            asha.report(trial, 0, values[trial])
        tops.append(asha.promotable(0))
    assert tops[0] == tops[1] and len(tops[0]) == 4


def test_records_without_the_rung_below_are_refused():
    with pytest.raises(ValueError, match="no result at rung 0"):
        AshaScheduler.from_records(Rungs(1, 9, 3), ["min"], [Record(4, 1, None)])
