"""`python -m worker` turns the worker's own errors into one `error:` line and their exit code."""

from __future__ import annotations

import logging
import signal

import pytest
import structlog

from worker import cli
from worker.batches import SystemicBatchError as RaisedByBatches
from worker.exceptions import SystemicBatchError, WorkerError


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    for name in ("JOB", "DRY_RUN", "DATABASE_URL", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TYPESENSE_API_KEY", "unit-test-key")
    monkeypatch.setenv("DB_PASSWORD", "postgres")
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.chdir(tmp_path)  # no `.env` of the developer's
    # main() configures logging to this test's captured stdout and takes SIGTERM/SIGINT: put
    # them back afterwards.
    config, handlers = structlog.get_config(), list(logging.getLogger().handlers)
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    structlog.configure(**config)
    logging.getLogger().handlers[:] = handlers
    for s, handler in signals.items():
        signal.signal(s, handler)


def test_every_row_of_a_batch_failing_exits_7_with_one_line(cli_env, monkeypatch, capsys):
    assert RaisedByBatches is SystemicBatchError and issubclass(SystemicBatchError, WorkerError)

    def run(inv, stop, retry_failures=False):
        raise SystemicBatchError(
            "phase products: all 40 rows of the batch failed, e.g. key 1: CheckViolation: new row for relation"
            ' "products" violates check constraint "c"\nDETAIL:  Failing row contains (1, postgres).'
        )

    monkeypatch.setattr(cli, "run", run)

    code = cli.main(["run"])

    assert code == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: SystemicBatchError: phase products: all 40 rows"), err
    # libpq's second line joins the first; "postgres" is data here, not the password.
    assert err.endswith('violates check constraint "c" DETAIL: Failing row contains (1, postgres).\n'), err


def test_an_unexpected_error_exits_1_with_one_line_and_its_traceback_in_the_log_without_secrets(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:Secr3t-pw-4711@db.internal/shop")

    def run(inv, stop, retry_failures=False):
        raise RuntimeError("could not parse postgresql://app:Secr3t-pw-4711@db.internal/shop")

    monkeypatch.setattr(cli, "run", run)

    code = cli.main(["run"])

    assert code == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: RuntimeError: could not parse postgresql://app:***@db.internal"), err
    assert "Traceback (most recent call last)" in out and "in run" in out, "the traceback is in the log"
    assert "Secr3t-pw-4711" not in out + err
