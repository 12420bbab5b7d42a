"""HTTP providers: 429 and 5xx answers, and failed connections, are retried as their own service,
no sooner than Retry-After; a real server on loopback answers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.servers import free_port
from utils.http import HttpUnavailable, check, retry_after_seconds, transport_errors
from worker.exceptions import ServiceUnavailable
from worker.retry import RetryPolicy, service_of
from worker.stop import StopFlag


class RecordingStop(StopFlag):
    """Records the backoff sleeps instead of sleeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def provider():
    """A server that answers each request with the next of `answers` (status, headers)."""
    answers: list[tuple[int, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            status, headers = answers.pop(0) if answers else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", answers
    server.shutdown()


def test_retry_after_is_read_as_seconds_or_as_a_date():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_a_429_waits_at_least_retry_after_and_names_the_provider(provider):
    url, answers = provider
    answers += [(429, {"Retry-After": "3"}), (503, {}), (200, {})]
    stop = RecordingStop()
    policy = RetryPolicy(timeout_seconds=60, max_wait_seconds=0.01, initial_wait_seconds=0.01)

    def call() -> int:
        with httpx.Client() as client, transport_errors("embeddings"):
            return check(client.post(f"{url}/embeddings"), "embeddings").status_code

    assert policy.call(call, what="embed", stop=stop) == 200
    assert stop.slept[0] >= 3.0, "Retry-After: 3 beats a backoff of 0.01 s"
    assert stop.slept[1] <= 0.01, "a 503 without Retry-After backs off as usual"


def test_answers_that_are_not_transient_are_the_adapters_to_read(provider):
    url, answers = provider
    answers.append((400, {}))
    with httpx.Client() as client:
        assert check(client.post(f"{url}/embeddings"), "embeddings").status_code == 400


def test_a_provider_that_is_down_is_named_when_retries_run_out():
    port = free_port()  # nothing listens here
    policy = RetryPolicy(timeout_seconds=60, max_attempts=2, max_wait_seconds=0, initial_wait_seconds=0)

    def call() -> None:
        with httpx.Client() as client, transport_errors("embeddings"):
            client.post(f"http://127.0.0.1:{port}/embeddings")

    with pytest.raises(ServiceUnavailable) as caught:
        policy.call(call, what="embed", stop=RecordingStop())
    assert caught.value.service == "embeddings"
    assert service_of(HttpUnavailable("embeddings", "x")) == "embeddings"
    assert service_of(httpx.ConnectError("x")) == "typesense", "an unwrapped httpx error is still the index's"
