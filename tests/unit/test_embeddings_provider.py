"""What the embeddings job accepts of a provider's answer: one finite vector of the configured
dimension per input, in the answer's `index` order."""

from __future__ import annotations

import json

import httpx
import pytest

from utils.http import HttpUnavailable
from worker.jobs.embeddings.provider import Provider, _finite


def answer(*vectors: object, order: list[int] | None = None) -> httpx.Response:
    order = order or list(range(len(vectors)))
    data = [{"object": "embedding", "index": i, "embedding": vectors[i]} for i in order]
    # As text: a provider may send NaN, which httpx's own JSON encoder refuses to write.
    return httpx.Response(200, content=json.dumps({"object": "list", "data": data}).encode(), headers={"Content-Type": "application/json"})


@pytest.fixture
def provider() -> Provider:
    return Provider("http://127.0.0.1:1/v1", "m", 3, None, 1.0)


def test_vectors_come_back_in_input_order_whatever_the_answers_order(provider):
    assert provider._vectors(answer([1, 0, 0], [0, 1, 0], order=[1, 0]), 2, 3) == [[1, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("response, expected, problem", [
    (answer([1.0, 0, 0]), 2, "1 embeddings for 2 inputs"),
    (answer([1.0, 0]), 1, "has 2 dimensions, not EMBEDDING_DIMENSIONS=3"),
    (answer([1.0, float("nan"), 0]), 1, "not a finite number"),
    (answer([1.0, "0.5", 0]), 1, "not a finite number"),
    (httpx.Response(200, json={"error": "?"}), 1, "not an embeddings list"),
])
def test_a_wrong_answer_is_the_providers_error_and_retried(provider, response, expected, problem):
    with pytest.raises(HttpUnavailable, match=problem):
        provider._vectors(response, expected, 3)


def test_finite_looks_at_each_value_only_when_the_sum_is_not():
    assert _finite([0.1] * 384) and _finite([1, 2.0]) and _finite([1e308, 1e308])
    assert not _finite([1.0, float("inf")]) and not _finite([float("nan")]) and not _finite([True, 1.0]) and not _finite([None])
