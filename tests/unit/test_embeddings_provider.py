"""What the embeddings job accepts of a provider's answer: one finite vector of the configured
dimension per input, in the answer's `index` order; which refusals mean "too long" (the text is
halved) rather than poison (the text is a recorded failure); the inputs' cut without a tokenizer."""

from __future__ import annotations

import json

import httpx
import pytest

from utils.http import HttpUnavailable
from worker.exceptions import ConfigError
from worker.jobs.embeddings.provider import InputRefused, Inputs, InputTooLong, Provider, _finite


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


def refusing(status: int, body: object) -> Provider:
    """A provider whose every request is answered `status` with `body`."""
    provider = Provider("http://provider.test/v1", "m", 3, None, 1.0)
    provider.client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))
    return provider


@pytest.mark.parametrize("status, body", [
    # OpenAI's, as it words them.
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens, however you requested 8610 tokens (8610 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.", "type": "invalid_request_error"}}),
    (400, {"error": {"message": "Invalid 'input': maximum context length is 8192 tokens.", "type": "invalid_request_error"}}),
    (400, {"error": {"message": "Requested 319487 tokens, max 300000 tokens per request", "code": "max_tokens_per_request"}}),
    # text-embeddings-inference's OpenAI route, and a provider whose error is a plain string.
    (413, {"message": "Input validation error: `inputs` must have less than 512 tokens. Given: 514", "code": 413, "type": "Validation"}),
    (400, {"error": "the input length exceeds the context length"}),
])
def test_a_refusal_for_length_is_input_too_long(status, body):
    with pytest.raises(InputTooLong):
        refusing(status, body).embed(["a long text"])


@pytest.mark.parametrize("message", ["This input could not be embedded", "'input' must be a string or a non-empty array of strings"])
def test_any_other_refusal_is_poison(message):
    with pytest.raises(InputRefused) as refused:
        refusing(400, {"error": {"message": message}}).embed(["a text"])
    assert type(refused.value) is InputRefused and str(refused.value) == message


def test_without_a_tokenizer_inputs_are_cut_to_max_tokens_characters():
    inputs = Inputs(None, 10, "none")
    assert inputs.cut(["Barista wanted", "Nurse", "Senior     developer"]) == ["Barista wa", "Nurse", "Senior"]


def test_a_tokenizer_given_explicitly_that_cannot_be_read_is_a_config_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    for source in (str(tmp_path / "absent.json"), str(tmp_path / "tokenizer.json")):
        with pytest.raises(ConfigError, match=f"EMBEDDING_TOKENIZER gives no usable tokenizer.json \\({source}\\)"):
            Inputs.load(source, 254, 1.0)
