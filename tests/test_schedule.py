"""Schedule: which steps the recorder measures."""

import pytest

from gradlab.errors import RecorderError
from gradlab.recorder import Schedule, default_schedule


def test_default_arguments_record_dense_start_then_every_50():
    s = Schedule()
    assert s.steps(260) == list(range(100)) + [100, 150, 200, 250]


def test_step_zero_is_always_recorded():
    for sched in (Schedule(every=7, dense_until=0), Schedule(every=3, dense_until=10, dense_every=4)):
        assert sched(0)


def test_dense_every_and_every_combine():
    s = Schedule(every=10, dense_until=12, dense_every=4)
    assert s.steps(35) == [0, 4, 8, 10, 20, 30]


def test_dense_until_zero_disables_the_dense_start():
    assert Schedule(every=5, dense_until=0).steps(12) == [0, 5, 10]


@pytest.mark.parametrize(
    "sched",
    [Schedule(), Schedule(every=1), Schedule(every=7, dense_until=30, dense_every=3), Schedule(every=6, dense_until=100, dense_every=4)],
)
@pytest.mark.parametrize("total", [0, 1, 2, 29, 30, 31, 100, 101, 1000])
def test_count_matches_steps(sched, total):
    assert sched.count(total) == len(sched.steps(total))


@pytest.mark.parametrize(
    "kwargs", [{"every": 0}, {"dense_every": 0}, {"dense_until": -1}, {"every": 2.5}, {"every": True}]
)
def test_invalid_schedules_raise(kwargs):
    with pytest.raises(RecorderError):
        Schedule(**kwargs)


def test_schedule_is_hashable_and_serialisable():
    s = Schedule(every=3, dense_until=9, dense_every=2)
    assert Schedule(**s.to_dict()) == s
    assert len({s, Schedule(every=3, dense_until=9, dense_every=2)}) == 1


def test_default_schedule_for_the_64k_step_run_matches_its_docstring():
    s = default_schedule(64_000)
    assert s == Schedule(every=320, dense_until=1280, dense_every=12)
    assert s.count(64_000) == 305


@pytest.mark.parametrize("total", [1, 7, 100, 200, 201, 1000, 5_000, 64_000, 500_000])
def test_default_schedule_stays_about_300_records(total):
    s = default_schedule(total)
    n = s.count(total)
    assert s(0)
    assert n == min(total, n)
    assert n <= 320
    if total <= 200:
        assert n == total  # short runs: every step


def test_default_schedule_rejects_empty_runs():
    with pytest.raises(RecorderError):
        default_schedule(0)
