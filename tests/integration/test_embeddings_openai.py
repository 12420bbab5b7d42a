"""The embeddings job against a provider shaped like OpenAI's: no tokenizer.json (404), and a
400 in OpenAI's words for an input over the model's context. The job must still run, and lose
no text for being long: inputs are cut by characters, and a text refused as too long is halved
until the provider takes it (`truncated_for_provider`), never failed."""

from __future__ import annotations

from tests.integration import test_embeddings
from tests.integration.inventory_data import events, run_worker
from tests.integration.kill_compare import counters_of
from tests.integration.openai_provider import OpenAIShapedProvider
from tests.integration.test_embeddings import JOB, connect, execute, queue
from worker.demo_embeddings import load_seed_state

#: The embeddings tests' fixture: the job's tables in a schema of the test's own, and the model
#: server's tokenizer given as EMBEDDING_TOKENIZER.
env = test_embeddings.env

#: The provider's context, in its model's tokens: the seed's texts cut to EMBEDDING_MAX_TOKENS
#: (254) characters have 37 to 55 tokens, so about half are refused, then taken halved.
LIMIT = 45
MAX_CHARS = 254  # EMBEDDING_MAX_TOKENS' default, as characters


def rule_logged(stdout: str) -> str:
    """What the preflight said the inputs are cut by."""
    [line] = [e for e in events(stdout) if e.get("event") == "embedding inputs"]
    return line["tokenizer"]


def test_without_a_tokenizer_every_text_is_embedded_and_those_refused_as_too_long_are_halved(env, model_server):
    with connect(env) as conn:
        seed = load_seed_state(conn, jobs=60)
        # A token per character (digits and dots): refused even halved once.
        conn.execute("UPDATE jobs SET description = repeat('1.', 2000) WHERE id IN (1, 2)")
    candidates = execute(env, "SELECT btrim(title || ' ' || coalesce(description, '')) FROM jobs WHERE is_active AND embedding IS NULL")
    env = {k: v for k, v in env.items() if k != "EMBEDDING_TOKENIZER"}
    provider = OpenAIShapedProvider(model_server.url, limit=LIMIT).start()
    try:
        env["EMBEDDING_URL"] = provider.url
        # Given explicitly, a tokenizer that cannot be had stays a configuration error.
        refused = run_worker({**env, "EMBEDDING_TOKENIZER": f"{provider.url}/tokenizer.json"}, "run", *JOB)
        assert refused.returncode == 2 and "EMBEDDING_TOKENIZER gives no usable tokenizer.json" in refused.stderr, refused.stderr
        result = run_worker(env, "run", *JOB, timeout=300)
        assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    finally:
        provider.stop()
    assert rule_logged(result.stdout) == (
        f"none ({provider.url}/tokenizer.json: HTTP 404: Invalid URL (GET /v1/tokenizer.json)):"
        f" inputs cut to {MAX_CHARS} characters; a text the provider refuses as too long is halved"
    )
    too_long = sum(provider.tokens(t[:MAX_CHARS].rstrip()) > LIMIT for (t,) in candidates)
    assert 2 < too_long < len(candidates)  # the case is made: some are refused, some are not
    status, counters = counters_of(env, JOB)
    assert status == "completed" and counters.get("failures", 0) == 0
    assert counters["embedded"] == len(candidates) == seed.active - seed.embedded
    assert counters["truncated_for_provider"] == too_long
    assert execute(env, "SELECT count(*) FROM jobs WHERE is_active AND embedding IS NULL") == [(0,)]
    assert set(queue(env).values()) == {"completed"}
    # Each was refused alone at least once (and within its request first), those of a token
    # per character twice or more.
    assert provider.requests["too_long"] >= too_long + 2
    assert provider.requests["tokenizer_404"] == 2  # once per run: no retry of a 404


def test_the_preflight_says_which_tokenizer_cuts_the_inputs(env, model_server):
    with connect(env) as conn:
        load_seed_state(conn, jobs=10)
    given = run_worker(env, "run", *JOB, "--dry-run")
    assert rule_logged(given.stdout) == f"EMBEDDING_TOKENIZER {env['EMBEDDING_TOKENIZER']}", given.stderr
    served = run_worker({k: v for k, v in env.items() if k != "EMBEDDING_TOKENIZER"}, "run", *JOB, "--dry-run")
    assert rule_logged(served.stdout) == f"the provider's tokenizer.json ({model_server.url}/tokenizer.json)", served.stderr
