"""The `embed` phase: every active job without an embedding gets one, written with UPDATE only.

The walk is a keyset over `jobs WHERE is_active AND embedding IS NULL`: the table is the truth,
not the queue. Per batch, the texts are cut by tokens and sent in requests of
EMBEDDING_BATCH_SIZE, at most EMBEDDING_CONCURRENCY in flight across the whole job; each
request is retried alone. A request the provider refuses (400) is split until the text it
refuses stands alone: that job is a recorded failure, the rest is written. A text it refuses
alone as too long (inputs cut by characters, without the model's tokenizer, can be) is halved
until it is taken, and counted in `truncated_for_provider`, not failed.

The write is one `UPDATE jobs SET embedding = ... FROM unnest(...)`: never INSERT, never upsert
(an upsert of partial rows fails on NOT NULL columns: Postgres checks the proposed row before it
resolves the conflict). It only fills rows still active, still without an embedding and whose
text is still the one embedded; any other is `skipped_changed`, and the walk is made again while
a walk skipped some (a row changed behind the cursor waits for the next walk).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Callable, Sequence

from psycopg import sql

from utils.keyset import Key, KeysetQuery
from worker.job import BatchResult, Counters, Failure, JobContext, KeysetPhase, Row
from worker.jobs.embeddings.provider import SERVICE, InputRefused, Inputs, InputTooLong, Provider
from worker.jobs.embeddings.tables import EmbeddingColumn, Tables, text, text_hash

Vectors = dict[int, list[float]]


@dataclass
class Answers:
    """What the provider made of some texts: vectors by id, the ids whose text it refused (with
    its message), and how many texts it took only once halved."""

    vectors: Vectors = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    halved: int = 0

    def __iadd__(self, other: "Answers") -> "Answers":
        self.vectors.update(other.vectors)
        self.refused.update(other.refused)
        self.halved += other.halved
        return self


class Embed(KeysetPhase):
    name = "embed"
    scanned_counter = "candidates"
    passes_counter = "embed_walks"
    max_passes = 3
    row_errors = ()  # a refused text is isolated by the phase itself, request by request

    def __init__(self, ctx: JobContext, tables: Tables, provider: Provider, inputs: Callable[[], Inputs], column: Callable[[], EmbeddingColumn]):
        self.ctx, self.tables, self.provider = ctx, tables, provider
        self._inputs, self._column = inputs, column
        settings = ctx.job_settings
        self.request_size, self.dimensions = settings.batch_size, settings.dimensions
        # A batch keeps every request slot busy: a provider far away makes every batch slow, and
        # the engine would shrink a slow batch below that.
        self.batch_size = self.batch_size_min = settings.batch_size * settings.concurrency
        self.pool: ThreadPoolExecutor | None = None
        self.query = self._query(())

    def _query(self, poison: Sequence[int]) -> KeysetQuery:
        return KeysetQuery(
            sql.SQL("{} AS j").format(self.tables.jobs), "id", (text("j"), text_hash("j")),  # type: ignore[arg-type]  # aliased
            filter=sql.SQL("j.is_active AND j.embedding IS NULL AND j.id <> ALL(%s::int[])"), filter_params=(list(poison),),
        )

    def prepare(self, resuming: bool) -> None:
        """Texts a walk found poison are not sent again by the next: they wait for `retry`."""
        self.query = self._query(sorted(int(f["key"]) for f in self.ctx.recorded_failures(self.name)))
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=self.ctx.job_settings.concurrency, thread_name_prefix="embeddings")

    def finish(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def count(self) -> int:
        with self.ctx.pg.connection().cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(self.query.table, self.query.filter), self.query.filter_params)
            return int(cur.fetchone()[0])

    def fetch(self, after: Key | None, limit: int) -> Sequence[Row]:
        return self.query.page(self.ctx.pg.connection(), after, limit)

    def fetch_keys(self, keys: Sequence[Key]) -> Sequence[Row]:
        return self._query(()).by_keys(self.ctx.pg.connection(), keys)

    def tally(self, rows: Sequence[Row]) -> Counters:
        """`found_silent`: jobs of the batch (none has an embedding) that the queue calls
        "completed": the silent failures the seed's queue hid."""
        with self.ctx.sink.transaction() as tx:
            [(silent,)] = tx.read(
                sql.SQL("SELECT count(*) FROM {} WHERE job_id = ANY(%s::int[]) AND status = 'completed'").format(self.tables.queue),
                ([r[0] for r in rows],),
            )
        return {"found_silent": silent}

    def differences(self, walked: Counters) -> int:
        return walked.get("skipped_changed", 0)

    def process(self, rows: Sequence[Row]) -> BatchResult:
        ids = [r[0] for r in rows]
        texts = self._inputs().cut([r[1] for r in rows])
        answers = self._embed(ids, texts)
        vectors = answers.vectors
        failures = [Failure(str(i), f"the provider refused this job's text: {message}", 400) for i, message in answers.refused.items()]
        if not vectors:  # a dry run (no call made), or every text refused
            return BatchResult({}, failures)
        done = [i for i in ids if i in vectors]
        hashes = {r[0]: r[2] for r in rows}
        flat = list(chain.from_iterable(vectors[i] for i in done))
        d = self.dimensions
        guard = sql.SQL("j.id = v.id AND j.is_active AND j.embedding IS NULL AND {} = v.h").format(text_hash("j"))
        pairs = sql.SQL("unnest(%s::int[], %s::text[]) WITH ORDINALITY AS v(id, h, n)")
        with self.ctx.sink.transaction() as tx:
            # The rows the write will fill, locked so that they still will: what a dry run
            # (whose write is skipped) reports too.
            [(fillable,)] = tx.read(
                sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} j, {} WHERE {} FOR UPDATE OF j) f").format(self.tables.jobs, pairs, guard),
                (done, [hashes[i] for i in done]),
            )
            tx.write(
                sql.SQL(
                    # %b: the vectors travel as a binary float array (in text, formatting them
                    # cost the worker more CPU than anything else it does).
                    "UPDATE {jobs} j SET embedding = (%b::real[])[(v.n - 1) * {d} + 1 : v.n * {d}]{cast} FROM {pairs} WHERE {guard}"
                ).format(jobs=self.tables.jobs, d=sql.Literal(d), cast=self._column().cast, pairs=pairs, guard=guard),
                (flat, done, [hashes[i] for i in done]),
            )
        return BatchResult({"embedded": fillable, "skipped_changed": len(done) - fillable, "truncated_for_provider": answers.halved}, failures)

    def _embed(self, ids: list[int], texts: list[str]) -> Answers:
        """The requests of a batch, EMBEDDING_CONCURRENCY in flight across the job."""
        assert self.pool is not None
        size = self.request_size
        futures: list[Future[Answers]] = [
            self.pool.submit(self._request, ids[k:k + size], texts[k:k + size]) for k in range(0, len(ids), size)
        ]
        answers = Answers()
        for future in futures:
            answers += future.result()
        return answers

    def _request(self, ids: list[int], texts: list[str]) -> Answers:
        """One request; a refused one split in halves until the refused text stands alone."""
        try:
            return Answers(self._send(ids, texts))
        except InputRefused as refused:
            if len(ids) == 1:
                return self._alone(ids[0], texts[0], refused)
            half = len(ids) // 2
            answers = self._request(ids[:half], texts[:half])
            answers += self._request(ids[half:], texts[half:])
            return answers

    def _alone(self, id_: int, text: str, refused: InputRefused) -> Answers:
        """A text the provider refused on its own. Refused as too long, its first half is sent
        instead, down to a single character: a cut made without the model's tokenizer can leave
        more tokens than the model takes, which is no reason to lose the text. Otherwise (or
        still refused at one character), a recorded failure."""
        while isinstance(refused, InputTooLong) and len(text) > 1:
            text = text[: len(text) // 2].rstrip()
            try:
                return Answers(self._send([id_], [text]), halved=1)
            except InputRefused as again:
                refused = again
        return Answers(refused={id_: str(refused)})

    def _send(self, ids: list[int], texts: list[str]) -> Vectors:
        """The texts' vectors by id (none in a dry run that calls no provider): one request,
        retried alone on a transient error."""
        answer = self.ctx.retry(lambda: self.ctx.sink.call(SERVICE, lambda: self.provider.embed(texts)), f"{SERVICE}: {len(texts)} texts")
        return {} if answer is None else dict(zip(ids, answer))
