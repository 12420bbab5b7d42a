"""The embeddings job's settings: the provider, and the tables."""

from __future__ import annotations

from dataclasses import dataclass

from worker.config import TableName
from worker.job_settings import setting


@dataclass(frozen=True)
class EmbeddingsSettings:
    url: str | None = setting(
        "EMBEDDING_URL", None,
        "Base URL of an OpenAI-compatible embeddings API: the job POSTs to <url>/embeddings (the local model server: http://embeddings:8080/v1).",
        required=True,
    )
    model: str = setting("EMBEDDING_MODEL", "all-MiniLM-L6-v2", "The model name sent with each request.")
    api_key: str | None = setting("EMBEDDING_API_KEY", None, "Bearer key of the provider (none for a local server).", secret=True)
    dimensions: int = setting(
        "EMBEDDING_DIMENSIONS", 384, "Dimensions of every vector: a response of another size is an error, and so is a column of another size.",
        minimum=1, maximum=16000,
    )
    batch_size: int = setting("EMBEDDING_BATCH_SIZE", 64, "Texts per request.", minimum=1, maximum=2048)
    concurrency: int = setting("EMBEDDING_CONCURRENCY", 4, "Requests in flight at once.", minimum=1, maximum=64)
    max_tokens: int = setting(
        "EMBEDDING_MAX_TOKENS", 254,
        "Each input is cut to this many tokens of the model's tokenizer before it is sent; without a tokenizer (see EMBEDDING_TOKENIZER), to this many characters.",
        minimum=1,
    )
    tokenizer: str | None = setting(
        "EMBEDDING_TOKENIZER", None,
        "The model's tokenizer.json (Hugging Face format), as a path or an http(s) URL (unusable: exit 2). Empty: <EMBEDDING_URL>/tokenizer.json when the provider serves one"
        " (the local model server does); else none (OpenAI serves none): inputs are cut to EMBEDDING_MAX_TOKENS characters, and a text the provider refuses as too long"
        " is halved until it is taken (counted in truncated_for_provider).",
    )
    timeout_seconds: float = setting("EMBEDDING_TIMEOUT_SECONDS", 60.0, "Seconds a request may take before it is retried.", minimum=0.1)
    jobs: TableName = setting("EMBEDDING_JOBS_TABLE", TableName("public", "jobs"), "The job postings: id, title, description, is_active, embedding.")
    queue: TableName = setting("EMBEDDING_QUEUE_TABLE", TableName("public", "embedding_queue"), "The embedding queue the application reads.")
