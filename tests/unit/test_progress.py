from worker.progress import PhaseProgress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_count_only_this_run():
    clock = FakeClock()
    progress = PhaseProgress(total=10_000, done_at_start=4_000, clock=clock)
    clock.now += 10
    snap = progress.snapshot(5_000)
    assert snap.rows_per_s == 100.0
    assert snap.eta_s == 50.0
    assert snap.percent == 50.0
    assert snap.fields()["eta"] == "50s"


def test_unknown_total_has_no_percent_or_eta():
    clock = FakeClock()
    progress = PhaseProgress(total=None, done_at_start=0, clock=clock)
    clock.now += 1
    snap = progress.snapshot(10)
    assert snap.percent is None and snap.eta_s is None
    assert snap.fields()["eta"] == "n/a"


def test_format_duration():
    assert format_duration(3725) == "1h02m"
    assert format_duration(185) == "3m05s"
    assert format_duration(12.4) == "12s"
