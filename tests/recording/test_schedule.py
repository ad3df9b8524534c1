"""Recording schedules: which of a run's snapshot sessions a rig records (select_sessions).

Worked by hand on two step lists: a regular one, 21 sessions at round(linspace(0, 1500, 21))
= 0, 75, ..., 1500 over 1500 steps, and a small irregular one. The order of the filters is
window, then every, then count (with linear or log spacing).
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from simlab.errors import SimlabError
from simlab.recording.schedule import select_sessions
from simlab.specs.rigs import ScheduleSpec

TOTAL = 1500
STEPS = np.round(np.linspace(0, TOTAL, 21)).astype(int)  # 0, 75, 150, ..., 1500

IRREGULAR_TOTAL = 200
IRREGULAR = np.array([0, 5, 12, 30, 31, 60, 200])  # fractions 0, .025, .06, .15, .155, .3, 1


def select(schedule: dict, steps=STEPS, total=TOTAL) -> list[int]:
    chosen = select_sessions(steps, total, ScheduleSpec(**schedule))
    assert np.issubdtype(np.asarray(chosen).dtype, np.integer)
    assert np.all(np.diff(chosen) > 0), "sessions must come in training order, each once"
    return [int(i) for i in chosen]


def test_the_step_list_is_what_the_hand_calculations_assume():
    assert STEPS.tolist() == [75 * i for i in range(21)]


# --------------------------------------------------------------------------- regular steps


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({}, list(range(21))),  # the default: every session
        ({"window": (0.0, 0.2)}, [0, 1, 2, 3, 4]),  # steps 0..300: both ends included
        ({"window": (0.2, 0.2)}, [4]),  # exactly step 300
        ({"window": (0.9, 1.0)}, [18, 19, 20]),  # steps 1350, 1425, 1500
        ({"window": (0.21, 0.29)}, [5]),  # step 375 = 0.25
        ({"every": 4}, [0, 4, 8, 12, 16, 20]),
        ({"every": 7}, [0, 7, 14]),
        ({"every": 30}, [0]),  # the first is always included
        ({"count": 5}, [0, 5, 10, 15, 20]),  # linear: targets 0, 375, 750, 1125, 1500
        ({"count": 2}, [0, 20]),
        ({"count": 21}, list(range(21))),
        ({"count": 6, "spacing": "log"}, [0, 1, 2, 5, 10, 20]),  # round(geomspace(1, 21, 6)) - 1
        ({"count": 2, "spacing": "log"}, [0, 20]),
        ({"count": 1}, [0]),
        ({"count": 1, "spacing": "log"}, [0]),
    ],
)
def test_single_filters(schedule, expected):
    assert select(schedule) == expected


def test_log_positions_are_the_documented_formula():
    positions = np.round(np.geomspace(1, 21, 6)).astype(int) - 1
    assert positions.tolist() == [0, 1, 2, 5, 10, 20]
    assert select({"count": 6, "spacing": "log"}) == positions.tolist()


@pytest.mark.parametrize(
    "schedule, expected",
    [
        # window [0.25, 1] -> 5..20; every 2 -> 5, 7, ..., 19 (steps 375, 525, ..., 1425);
        # 4 linear targets 375, 725, 1075, 1425 -> nearest steps 375, 675, 1125, 1425
        ({"window": (0.25, 1.0), "every": 2, "count": 4}, [5, 9, 15, 19]),
        # window [0.1, 0.9] -> 2..18; every 3 -> 2, 5, 8, 11, 14, 17; log 3: positions 0, 1, 5
        ({"window": (0.1, 0.9), "every": 3, "count": 3, "spacing": "log"}, [2, 5, 17]),
        # window [0, 0.2] -> 0..4; every 2 -> 0, 2, 4; count 3 keeps all of them
        ({"window": (0.0, 0.2), "every": 2, "count": 3}, [0, 2, 4]),
        ({"window": (0.0, 0.2), "every": 2}, [0, 2, 4]),
        # every first, then count: 0, 4, ..., 20 (6 sessions); linear 3 -> steps 0, 750, 1500
        ({"every": 4, "count": 3}, [0, 8, 20]),
        # window [0.5, 1] -> 10..20 (11 sessions); log 4: round(geomspace(1, 11, 4)) - 1 = 0, 1, 4, 10
        ({"window": (0.5, 1.0), "count": 4, "spacing": "log"}, [10, 11, 14, 20]),
    ],
)
def test_filters_apply_in_order_window_every_count(schedule, expected):
    assert select(schedule) == expected


def test_window_then_every_counts_from_the_first_session_in_the_window():
    # window [0.1, 1] starts at index 2 (step 150); every 5 then keeps 2, 7, 12, 17
    assert select({"window": (0.1, 1.0), "every": 5}) == [2, 7, 12, 17]


# --------------------------------------------------------------------------- irregular steps


@pytest.mark.parametrize(
    "schedule, expected",
    [
        ({}, [0, 1, 2, 3, 4, 5, 6]),
        ({"window": (0.0, 0.1)}, [0, 1, 2]),
        ({"window": (0.1, 0.2)}, [3, 4]),
        ({"every": 2}, [0, 2, 4, 6]),
        ({"count": 3}, [0, 5, 6]),  # linear targets 0, 100, 200: 100 is nearest to 60
        ({"count": 2}, [0, 6]),
        ({"count": 4, "spacing": "log"}, [0, 1, 3, 6]),  # round(geomspace(1, 7, 4)) - 1
        ({"window": (0.1, 0.2), "count": 2}, [3, 4]),  # targets 30, 31
        ({"window": (0.0, 0.3), "every": 2, "count": 2}, [0, 4]),  # 0..5 -> 0, 2, 4 -> steps 0, 31
        ({"window": (0.0, 0.3), "count": 3}, [0, 3, 5]),  # targets 0, 30, 60
    ],
)
def test_irregular_steps(schedule, expected):
    assert select(schedule, IRREGULAR, IRREGULAR_TOTAL) == expected


# --------------------------------------------------------------------------- what cannot be served


def _lists_every_session(message: str, steps, total):
    assert f"has {len(steps)} sessions" in message, message
    for step in steps:
        assert f"{step} ({step / total:.2f})" in message, (step, message)


def test_count_larger_than_what_remains_lists_the_existing_sessions():
    with pytest.raises(SimlabError) as info:
        select({"window": (0.0, 0.2), "count": 6})
    message = str(info.value)
    assert "asks for 6 sessions but only 5 remain" in message, message
    _lists_every_session(message, STEPS, TOTAL)


def test_count_larger_than_what_every_leaves():
    with pytest.raises(SimlabError) as info:
        select({"every": 4, "count": 7})  # 6 remain
    assert "only 6 remain" in str(info.value)
    _lists_every_session(str(info.value), STEPS, TOTAL)


def test_count_larger_than_the_run():
    with pytest.raises(SimlabError) as info:
        select({"count": 8}, IRREGULAR, IRREGULAR_TOTAL)
    _lists_every_session(str(info.value), IRREGULAR, IRREGULAR_TOTAL)


@pytest.mark.parametrize(
    "steps, total, window",
    [(STEPS, TOTAL, (0.01, 0.04)), (STEPS, TOTAL, (0.51, 0.54)), (IRREGULAR, IRREGULAR_TOTAL, (0.5, 0.9))],
)
def test_a_window_with_no_session_is_an_error(steps, total, window):
    with pytest.raises(SimlabError) as info:
        select({"window": window}, steps, total)
    message = str(info.value)
    assert "holds no session" in message, message
    _lists_every_session(message, steps, total)


@pytest.mark.parametrize(
    "steps, total, count",
    [
        # targets 0, 66.7, 133.3, 200: both 133.3 and 200 are nearest to step 200
        (IRREGULAR, IRREGULAR_TOTAL, 4),
        # targets 0, 25, 50, 75, 100 over steps 0, 1, 2, 3, 100: 25 and 50 both nearest to 3
        (np.array([0, 1, 2, 3, 100]), 100, 4),
    ],
)
def test_linear_spacing_that_cannot_give_distinct_sessions_is_an_error(steps, total, count):
    with pytest.raises(SimlabError) as info:
        select({"count": count}, steps, total)
    message = str(info.value)
    assert f"{count} linear-spaced sessions" in message and "too sparse" in message, message
    _lists_every_session(message, steps, total)


def test_log_spacing_moves_colliding_positions_to_the_next_free_session():
    # round(geomspace(1, 5, 5)) - 1 = 0, 0, 1, 2, 4: the repeats move on to 0, 1, 2, 3, 4
    assert select({"window": (0.0, 0.2), "count": 5, "spacing": "log"}) == [0, 1, 2, 3, 4]
    # round(geomspace(1, 21, 12)) - 1 = 0, 0, 1, 1, 2, 3, 4, 6, 8, 11, 15, 20 -> distinct, still log-like
    assert select({"count": 12, "spacing": "log"}) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 15, 20]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "bad",
    [
        {"window": (0.5, 0.2)},
        {"window": (-0.1, 0.5)},
        {"window": (0.0, 1.5)},
        {"every": 0},
        {"count": 0},
        {"spacing": "geometric"},
        {"cuont": 3},
    ],
)
def test_bad_schedule_settings_are_rejected(bad):
    with pytest.raises(ValidationError):
        ScheduleSpec(**bad)
