import pytest

from worker.sizing import MAX_GROWTH, BatchSizer, PipelineShare


def test_grows_toward_the_target_duration_but_no_faster_than_the_cap():
    sizer = BatchSizer(start=1000, minimum=100, maximum=10_000, target_seconds=1.0)
    assert sizer.record(1000, 0.1) == 1000 * MAX_GROWTH  # 10x too fast: grows by the cap only
    for _ in range(20):
        sizer.record(sizer.size, sizer.size * 0.0001)
    assert sizer.size == 10_000, "clamped to the maximum"


def test_shrinks_when_batches_take_too_long_and_stays_within_the_minimum():
    sizer = BatchSizer(start=4000, minimum=500, maximum=10_000, target_seconds=1.0)
    assert sizer.record(4000, 8.0) == 2000  # 8x too slow: halves at most
    for _ in range(10):
        sizer.record(sizer.size, sizer.size * 0.01)
    assert sizer.size == 500


def test_settles_where_a_batch_takes_the_target_time():
    sizer = BatchSizer(start=1000, minimum=1, maximum=100_000, target_seconds=2.0)
    for _ in range(30):
        sizer.record(sizer.size, sizer.size / 5000)  # 5000 rows/s
    assert abs(sizer.size - 10_000) <= 10


def test_start_outside_the_bounds_is_clamped_and_empty_batches_change_nothing():
    sizer = BatchSizer(start=50, minimum=100, maximum=200, target_seconds=1.0)
    assert sizer.size == 100
    assert sizer.record(0, 1.0) == 100


def test_overlapping_batches_are_each_charged_only_their_share_of_the_pipelines_time():
    share = PipelineShare()
    assert share.record(started=0.0, committed=1.0) == 1.0  # the first batch: its own duration
    # Two in flight: the next batch started at 0.1 but the pipeline was busy with the first until 1.0.
    assert share.record(started=0.1, committed=1.5) == 0.5
    assert share.record(started=1.2, committed=2.0) == 0.5


def test_batches_one_after_another_are_charged_their_own_duration_not_the_pause_between():
    share = PipelineShare()
    assert share.record(started=0.0, committed=0.4) == 0.4
    assert share.record(started=1.4, committed=1.8) == pytest.approx(0.4)  # a 1 s pause before it started
