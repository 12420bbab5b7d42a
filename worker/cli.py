"""`python -m worker [run|status|reset]`: the operator's entry point.

Exit codes: 0 completed or stopped cleanly on a signal; 2 configuration error (before any
connection); 3 another worker holds the job; 4 a server stayed unreachable; 5 a table,
collection, field or database is missing or wrong; 6 credentials refused; 7 every row of a batch
failed; 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import pymongo.errors
import structlog

from utils import logging as log_setup
from utils.pg import AuthenticationFailed, DatabaseMissing
from utils.typesense import Unauthorized
from worker.checkpoint import Checkpoint, MemoryCheckpointStore
from worker.config import Settings, load_settings, require_stores
from worker.engine import Engine, EngineOptions
from worker.exceptions import AccessDenied, ConfigError, SchemaMismatch, WorkerError
from worker.job import Job
from worker.jobs import JOBS, job_class
from worker.lease import default_owner
from worker.pipeline import PipelineOptions
from worker.resources import Resources
from worker.retry import RetryPolicy
from worker.stop import StopFlag, install_signal_handlers

log = structlog.get_logger("worker")


def build_parser() -> argparse.ArgumentParser:
    run_options = argparse.ArgumentParser(add_help=False)
    run_options.add_argument("--job", help=f"job to run (default: $JOB or inventory_fields; known: {', '.join(JOBS)})")
    run_options.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    parser = argparse.ArgumentParser(
        prog="python -m worker", description="Resumable backfill worker.", parents=[run_options]
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run a job (the default command)", parents=[run_options])
    status = commands.add_parser("status", help="print checkpoints")
    status.add_argument("--job", help="only this job")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    reset = commands.add_parser("reset", help="delete a job's checkpoint so the next run starts over")
    reset.add_argument("--job", required=True)
    reset.add_argument("--yes", action="store_true", help="confirm")
    reset.add_argument("--force", action="store_true", help="delete it even while a worker holds the job's lease")
    failures = commands.add_parser("failures", help="list rows and documents that could not be written")
    failures.add_argument("--job", help="only this job")
    retry = commands.add_parser("retry", help="process the recorded failures again, after fixing the data")
    retry.add_argument("--job", required=True)
    verify = commands.add_parser("verify", help="compare the stores read-only; exit 0 if they agree, 1 if not")
    verify.add_argument("--job", help="job to verify (default: $JOB or inventory_fields)")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    overrides: dict[str, Any] = {}
    if getattr(args, "job", None):
        overrides["job"] = args.job
    if getattr(args, "dry_run", False) or command == "verify":
        overrides["dry_run"] = True  # verify writes nothing: its scratch tables are temporary
    try:
        settings = load_settings(**overrides)
        job_cls = job_class(settings.job)
        if command in ("run", "retry", "verify"):  # the commands that use the job's own stores
            require_stores(settings, job_cls.stores, job_cls.name)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return error.exit_code
    scrubber = log_setup.configure(settings.log_format, settings.log_level, settings.secrets())
    try:
        if command == "status":
            return show_status(settings, args.job, args.json)
        if command == "reset":
            return reset(settings, args.yes, args.force)
        if command == "failures":
            return list_failures(settings, args.job)
        if command == "verify":
            return verify(settings, args.json)
        return run(settings, retry_failures=command == "retry")
    except Exception as error:
        known = _as_worker_error(error)
        if known is None:
            # A bug, not a condition we know: its traceback goes to the log, through the scrubber
            # like every line, instead of raw to stderr.
            log.exception("worker failed unexpectedly")
        return _fail(known or error, scrubber)


def _as_worker_error(error: Exception) -> WorkerError | None:
    """Errors of the servers' own clients that mean "fix the configuration", as ours."""
    if isinstance(error, WorkerError):
        return error
    if isinstance(error, Unauthorized):
        return AccessDenied(f"Typesense refused TYPESENSE_API_KEY: {error}")
    if isinstance(error, AuthenticationFailed):
        return AccessDenied(f"Postgres refused DB_USER/DB_PASSWORD: {error}")
    if isinstance(error, DatabaseMissing):
        return SchemaMismatch(f"DB_DATABASE: {error}")
    if isinstance(error, pymongo.errors.OperationFailure) and error.code in (13, 18):
        return AccessDenied(f"MongoDB refused the credentials in MONGO_URI: {error}")
    return None


@contextmanager
def _job_run(settings: Settings) -> Iterator[tuple[Job, Resources, StopFlag, RetryPolicy]]:
    """The job of `settings` with the clients of its stores, a stop flag its signals set, and
    the retry policy: what `run`, `retry` and `verify` share."""
    stop = StopFlag()
    install_signal_handlers(stop, settings.stop_timeout_seconds, _force_exit)
    job_cls = job_class(settings.job)
    with Resources.open(settings, job_cls.stores) as resources:
        yield job_cls(resources.job_context(stop)), resources, stop, RetryPolicy(
            settings.retry_timeout_seconds, settings.retry_max_wait_seconds
        )


def run(settings: Settings, retry_failures: bool = False) -> int:
    with _job_run(settings) as (job, resources, stop, policy):
        store = resources.checkpoints
        if settings.dry_run:
            store = MemoryCheckpointStore(policy.call(lambda: resources.checkpoints.load(job.checkpoint_id), what="checkpoint: load", stop=stop))
        options = EngineOptions(
            owner=default_owner(),
            lease_ttl_seconds=settings.lease_ttl_seconds,
            dry_run=settings.dry_run,
            pipeline=PipelineOptions(
                depth=settings.pipeline_depth,
                sleep_between_batches=settings.sleep_between_batches,
                batch_size_min=settings.batch_size_min,
                batch_size_max=settings.batch_size_max,
                batch_target_seconds=settings.batch_target_seconds,
            ),
        )
        engine = Engine(job, store, resources.failure_store(), stop, policy, options, resources.throttler(stop))
        checkpoint = engine.retry_failures() if retry_failures else engine.run()
        if settings.dry_run and checkpoint is not None:
            log.info("dry run: nothing was written", job=job.name, would=checkpoint.counters)
    return 0


def verify(settings: Settings, as_json: bool) -> int:
    """The job's read-only comparison: differences by kind with a few example keys."""
    with _job_run(settings) as (job, _, stop, policy):
        policy.call(job.check, what="preflight checks", stop=stop)
        found = policy.call(job.verify, what=f"{job.name}: verify", stop=stop)
    report = {"job": job.name, **found.report()}
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for kind, entry in report["by_kind"].items():
            examples = f"  e.g. {', '.join(map(repr, entry['examples']))}" if entry["examples"] else ""
            print(f"{kind:>28}: {entry['count']}{examples}")
        print(f"{job.name}: {'stores agree' if found.total == 0 else f'{found.total} difference(s)'}")
    return 0 if found.total == 0 else 1


def list_failures(settings: Settings, job_name: str | None) -> int:
    with Resources.open(settings) as resources:
        records = resources.failures.list(job_name)
    if not records:
        print("no failures recorded")
        return 0
    for r in records:
        print(f"{r['job']}\t{r['phase']}\tkey={r['key']!r}\tcode={r.get('code')}\tlast_seen={r.get('last_seen')}\t{r['error']}")
    print(f"{len(records)} failure(s); after fixing the data: python -m worker retry --job JOB")
    return 0


def show_status(settings: Settings, job_name: str | None, as_json: bool) -> int:
    with Resources.open(settings) as resources:
        entries = resources.checkpoints.all()
    if job_name:
        wanted = job_class(job_name).checkpoint_id
        entries = [(cp, lease) for cp, lease in entries if cp.job_id == wanted]
    if not entries:
        print(f"no checkpoint{' for job ' + job_name if job_name else 's'}: not started (or reset)")
        return 0
    reports = [status_report(cp, lease) for cp, lease in entries]
    if as_json:
        print(json.dumps(reports, default=str, indent=2))
    else:
        for report in reports:
            print("\n".join(f"{k:>12}: {v}" for k, v in report.items()), end="\n\n")
    return 0


def status_report(cp: Checkpoint, lease: dict[str, Any] | None) -> dict[str, Any]:
    percent = None
    if cp.phase_total:
        percent = round(100.0 * cp.phase_done / cp.phase_total, 2)
    return {
        "checkpoint": cp.job_id,
        "job": cp.job,
        "status": str(cp.status),
        "phase": cp.phase,
        "pass": cp.phase_pass,
        "last_id": cp.last_id,
        "batch_no": cp.batch_no,
        "phase_rows": f"{cp.phase_done}/{cp.phase_total if cp.phase_total is not None else '?'}",
        "percent": f"{percent}%" if percent is not None else "n/a",
        "counters": json.dumps(cp.counters, sort_keys=True),
        "updated_at": str(cp.updated_at),
        "lease": f"{lease['owner']} until {lease['expires_at']}" if lease else "free",
        "error": cp.error,
    }


def reset(settings: Settings, confirmed: bool, force: bool = False) -> int:
    """Delete the job's checkpoint; refuse (exit 3, like a second worker) while another worker
    holds a live lease on it, unless `force`."""
    from worker.exceptions import LeaseHeld

    checkpoint_id = job_class(settings.job).checkpoint_id
    if not confirmed:
        print(f"refusing to delete checkpoint {checkpoint_id!r} without --yes", file=sys.stderr)
        return 2
    with Resources.open(settings) as resources:
        lease = resources.checkpoints.live_lease(checkpoint_id)
        if lease and not force:
            print(
                f"refusing to delete checkpoint {checkpoint_id!r}: job {settings.job!r} is being run by "
                f"{lease.get('owner')} (lease valid until {lease.get('expires_at')}); stop that worker, "
                "or pass --force",
                file=sys.stderr,
            )
            return LeaseHeld.exit_code
        if lease:
            # Its next checkpoint save finds the document gone: it stops with LeaseLost (exit 3).
            print(f"--force: deleting it under {lease.get('owner')}, which will stop at its next checkpoint", file=sys.stderr)
        deleted = resources.checkpoints.delete(checkpoint_id)
    print(f"checkpoint {checkpoint_id!r} {'deleted' if deleted else 'did not exist'}; the next run starts over")
    return 0


def _fail(error: Exception, scrubber: log_setup.SecretScrubber) -> int:
    """One line on stderr, and its exit code (1 for an error that is not a WorkerError)."""
    exit_code = error.exit_code if isinstance(error, WorkerError) else WorkerError.exit_code
    # One line: libpq and others put hints on lines of their own.
    message = " ".join(scrubber.scrub(f"{type(error).__name__}: {error}").split())
    log.error("worker failed", error=message, exit_code=exit_code)
    print(f"error: {message}", file=sys.stderr)
    return exit_code


def _force_exit(reason: str) -> None:
    """Exit now: the checkpoint covers only finished batches, so abandoning one loses nothing."""
    log.warning("forced exit; the batch in flight will be redone on the next start", reason=reason)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
