"""`python -m worker [run|status|reset|failures|retry|verify|<a job's verb>]`: the operator's
entry point. The job is read first (`--job`, else $JOB), since its flags and verbs are part of
the command line.

Exit codes: 0 completed or stopped cleanly on a signal; 2 configuration error (before any
connection); 3 another worker holds the job; 4 a server stayed unreachable; 5 a table,
collection, field or database is missing or wrong; 6 credentials refused; 7 every row of a batch
failed; 8 a verify step found a mismatch; 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import pymongo.errors
import structlog

from utils import logging as log_setup
from utils.pg import AuthenticationFailed, DatabaseMissing
from utils.typesense import Unauthorized
from worker.checkpoint import Checkpoint, MemoryCheckpointStore
from worker.config import Settings, environment, load_settings, require_stores
from worker.engine import Engine, EngineOptions
from worker.exceptions import AccessDenied, ConfigError, SchemaMismatch, WorkerError
from worker.job import Job
from worker.job_settings import Run, declared, secrets
from worker.jobs import JOBS, job_class
from worker.lease import default_claim_dir, default_owner
from worker.pipeline import PipelineOptions
from worker.resources import Resources
from worker.retry import RetryPolicy
from worker.stop import StopFlag, StopRequested, install_signal_handlers

log = structlog.get_logger("worker")


@dataclass(frozen=True)
class Invocation:
    """One command line, read and validated: the global settings, the job with its own
    settings, and the run they name."""

    args: argparse.Namespace
    command: str
    settings: Settings
    job_cls: type[Job]
    job_settings: Any
    run: Run
    #: Whether the command line named the job (`--job`), and gave any of the job's flags (a
    #: run, not every run of the job, is meant).
    job_named: bool
    job_flags_given: bool


def build_parser(job_cls: type[Job]) -> argparse.ArgumentParser:
    """The command line of `job_cls`: the built-in commands and the job's verbs, each with
    the job's flags (`--source PATH`, ...) where a run is named. Options shared by the top
    level and a command default to "absent" (SUPPRESS), so a command's default never hides
    the value given before it (`--source F run`)."""
    absent = argparse.SUPPRESS
    job_flags = argparse.ArgumentParser(add_help=False)
    for d in declared(job_cls.settings_class):
        if d.spec.flag:
            kind = {"action": "store_true"} if d.kind is bool else {"metavar": d.spec.env}
            job_flags.add_argument(d.spec.flag, dest=f"job_{d.name}", default=absent, help=f"{d.spec.help} (or ${d.spec.env})", **kind)
    job_option = argparse.ArgumentParser(add_help=False)
    job_option.add_argument("--job", default=absent, help=f"the job (default: $JOB or inventory_fields; known: {', '.join(JOBS)})")
    dry_run = argparse.ArgumentParser(add_help=False)
    dry_run.add_argument("--dry-run", action="store_true", default=absent, help="read and report; write nothing")
    dry_run.add_argument(
        "--dry-run-calls", action="store_true", default=absent,
        help="(also --dry-run=calls) a dry run that still calls external providers: it spends",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    named_run = [job_option, job_flags]

    parser = argparse.ArgumentParser(
        prog="python -m worker", description="Resumable backfill worker.", parents=[*named_run, dry_run]
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run a job (the default command)", parents=[*named_run, dry_run])
    commands.add_parser("status", help="print checkpoints: runs, with their parameters", parents=[*named_run, as_json])
    reset = commands.add_parser("reset", help="delete a run's checkpoint so the next run starts over", parents=named_run)
    reset.add_argument("--yes", action="store_true", help="confirm")
    job_has_force = any(d.spec.flag == "--force" for d in declared(job_cls.settings_class))
    lease_flags = ["--break-lease"] + ([] if job_has_force else ["--force"])
    reset.add_argument(*lease_flags, dest="break_lease", action="store_true", help="delete it even while a worker holds its lease")
    commands.add_parser("failures", help="list rows and documents that could not be written", parents=named_run)
    commands.add_parser("retry", help="process the recorded failures again, after fixing the data", parents=named_run)
    commands.add_parser(
        "verify", help="compare the stores read-only; exit 0 if they agree, 1 if not", parents=[*named_run, as_json]
    )
    for v in job_cls.verbs().values():
        if v.name in commands.choices:
            raise TypeError(f"job {job_cls.name!r}: verb {v.name!r} is a built-in command")
        verb = commands.add_parser(v.name, help=f"{v.help} (job {job_cls.name})", parents=[*named_run, dry_run, as_json])
        for argument in v.arguments:
            verb.add_argument(*argument.flags, **argument.options)
    return parser


def read_command_line(argv: Sequence[str], env: Mapping[str, str]) -> Invocation:
    """Parse `argv` for the job it names (`--job`, else $JOB) and validate every setting;
    ConfigError for a bad one."""
    argv = ["--dry-run-calls" if a == "--dry-run=calls" else a for a in argv]
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--job")
    job_named = named.parse_known_args(argv)[0].job
    job_cls = job_class(job_named or env.get("JOB", "").strip() or Settings.job)
    args = build_parser(job_cls).parse_args(argv)
    command = args.command or "run"
    overrides: dict[str, Any] = {"job": job_cls.name}
    if getattr(args, "dry_run", False) or getattr(args, "dry_run_calls", False) or command == "verify":
        overrides["dry_run"] = True  # verify writes nothing: its scratch tables are temporary
    if getattr(args, "dry_run_calls", False):
        overrides["dry_run_calls"] = True
    settings = load_settings(env, **overrides)
    flags = {d.name: getattr(args, f"job_{d.name}", None) for d in declared(job_cls.settings_class)}
    # Listing every run of the job needs none of its settings; naming one run does.
    verb = job_cls.verbs().get(command)
    names_run = command not in ("status", "failures") and (verb is None or verb.names_run)
    job_settings = job_cls.read_settings(env, flags, required=names_run)
    if command not in ("status", "reset", "failures"):  # the commands that use the job's own stores
        require_stores(settings, job_cls.stores, job_cls.name)
    return Invocation(
        args, command, settings, job_cls, job_settings, Run.of(job_cls.name, job_cls.checkpoint_id, job_settings),
        job_named is not None, any(v is not None for v in flags.values()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        inv = read_command_line(sys.argv[1:] if argv is None else argv, environment())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return error.exit_code
    settings = inv.settings
    scrubber = log_setup.configure(settings.log_format, settings.log_level, settings.secrets() + secrets(inv.job_settings))
    stop = StopFlag()
    install_signal_handlers(stop, settings.stop_timeout_seconds, _force_exit)
    if stop.requested:
        log.info("stopped during start-up, before any connection; nothing was done", reason=stop.reason)
        return 0
    try:
        return _dispatch(inv, stop)
    except StopRequested:
        # A retry's wait or a throttle pause ended by the stop, before the run had its lease.
        log.info("stopped before the run started; nothing was done", reason=stop.reason)
        return 0
    except Exception as error:
        known = _as_worker_error(error)
        if known is None:
            # A bug, not a condition we know: its traceback goes to the log, through the scrubber
            # like every line, instead of raw to stderr.
            log.exception("worker failed unexpectedly")
        return _fail(known or error, scrubber)


def _dispatch(inv: Invocation, stop: StopFlag) -> int:
    """The command of `inv`, with the process's stop flag."""
    if inv.command == "status":
        return show_status(inv)
    if inv.command == "reset":
        return reset(inv)
    if inv.command == "failures":
        return list_failures(inv)
    if inv.command == "verify":
        return verify(inv, stop)
    if inv.command in inv.job_cls.verbs():
        return run_verb(inv, stop)
    return run(inv, stop, retry_failures=inv.command == "retry")


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
def _job_run(inv: Invocation, stop: StopFlag) -> Iterator[tuple[Job, Resources, StopFlag, RetryPolicy]]:
    """The job of `inv` with the clients of its stores, the stop flag, and the retry policy:
    what `run`, `retry`, `verify` and the job's verbs share."""
    settings = inv.settings
    policy = RetryPolicy(settings.retry_timeout_seconds, settings.retry_max_wait_seconds)
    with Resources.open(settings, inv.job_cls.stores) as resources:
        yield inv.job_cls(resources.job_context(stop, inv.job_settings, inv.run, policy)), resources, stop, policy


def run(inv: Invocation, stop: StopFlag, retry_failures: bool = False) -> int:
    settings = inv.settings
    with _job_run(inv, stop) as (job, resources, stop, policy):
        store = resources.checkpoints
        if settings.dry_run:
            store = MemoryCheckpointStore(policy.call(lambda: resources.checkpoints.load(job.run.checkpoint_id), what="checkpoint: load", stop=stop))
        options = EngineOptions(
            owner=default_owner(),
            lease_ttl_seconds=settings.lease_ttl_seconds,
            dry_run=settings.dry_run,
            claim_dir=None if settings.dry_run else default_claim_dir(),
            pipeline=PipelineOptions(
                depth=settings.pipeline_depth,
                sleep_between_batches=settings.sleep_between_batches,
                batch_size_min=settings.batch_size_min,
                batch_size_max=settings.batch_size_max,
                batch_target_seconds=settings.batch_target_seconds,
            ),
        )
        engine = Engine(job, store, resources.failure_store(), stop, policy, options, resources.throttler(stop, job.indicators()))
        checkpoint = engine.retry_failures() if retry_failures else engine.run()
        if settings.dry_run and checkpoint is not None:
            skipped = getattr(job.ctx.sink, "skipped_calls", {})
            log.info("dry run: nothing was written", job=job.run.name, would=checkpoint.counters, calls_not_made=skipped)
    return 0


def verify(inv: Invocation, stop: StopFlag) -> int:
    """The job's read-only comparison: differences by kind with a few example keys."""
    with _job_run(inv, stop) as (job, _, stop, policy):
        policy.call(job.check, what="preflight checks", stop=stop)
        found = policy.call(job.verify, what=f"{job.name}: verify", stop=stop)
    report = {"job": job.run.name, **found.report()}
    if inv.args.json:
        print(json.dumps(report, indent=2))
    else:
        for kind, entry in report["by_kind"].items():
            examples = f"  e.g. {', '.join(map(repr, entry['examples']))}" if entry["examples"] else ""
            print(f"{kind:>28}: {entry['count']}{examples}")
        print(f"{job.run.name}: {'stores agree' if found.total == 0 else f'{found.total} difference(s)'}")
    return 0 if found.total == 0 else 1


def run_verb(inv: Invocation, stop: StopFlag) -> int:
    """A command the job added: after its preflight, its report printed."""
    verb = inv.job_cls.verbs()[inv.command]
    with _job_run(inv, stop) as (job, _, stop, policy):
        policy.call(job.check, what="preflight checks", stop=stop)
        report = getattr(job, verb.method)(inv.args)
    _print_report(report, inv.args.json)
    return 0


def _print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, default=str, indent=2))
    else:
        print("\n".join(f"{k:>12}: {v}" for k, v in report.items()), end="\n\n")


def list_failures(inv: Invocation) -> int:
    """The run's failures when its flags are given; with `--job` alone, every run's of the job."""
    with Resources.open(inv.settings) as resources:
        records = resources.failures.list()
    if inv.job_named or inv.job_flags_given:
        records = [r for r in records if _of_run(r["job"], inv)]
    if not records:
        print("no failures recorded")
        return 0
    for r in records:
        print(f"{r['job']}\t{r['phase']}\tkey={r['key']!r}\tcode={r.get('code')}\tlast_seen={r.get('last_seen')}\t{r['error']}")
    print(f"{len(records)} failure(s); after fixing the data: python -m worker retry --job JOB [its flags]")
    return 0


def _of_run(run_name: str, inv: Invocation) -> bool:
    """Whether `run_name` (a checkpoint's job or a failure's) is a run the command line names."""
    if inv.job_flags_given:
        return run_name == inv.run.name
    return run_name == inv.job_cls.name or run_name.startswith(inv.job_cls.name + ":")


def show_status(inv: Invocation) -> int:
    with Resources.open(inv.settings) as resources:
        entries = resources.checkpoints.all()
    if inv.job_flags_given:
        entries = [(cp, lease) for cp, lease in entries if cp.job_id == inv.run.checkpoint_id]
    elif inv.job_named:
        entries = [(cp, lease) for cp, lease in entries if cp.job == inv.job_cls.name]
    progress = _job_progress(inv)
    if not entries:
        print(f"no checkpoint{' for ' + inv.run.name if inv.job_named or inv.job_flags_given else 's'}: not started (or reset)")
        if progress:
            _print_report(progress, as_json=False)
        return 0
    reports = [status_report(cp, lease) | ({"progress": progress} if progress else {}) for cp, lease in entries]
    if inv.args.json:
        print(json.dumps(reports, default=str, indent=2))
    else:
        for report in reports:
            report.pop("progress", None)
            _print_report(report, as_json=False)
        if progress:
            _print_report(progress, as_json=False)
    return 0


def _job_progress(inv: Invocation) -> dict[str, Any]:
    """What the named job's own tables say of its progress (`Job.status`), if it says anything."""
    if inv.job_cls.status is Job.status or not (inv.job_named or inv.job_flags_given):
        return {}
    with Resources.open(inv.settings, inv.job_cls.stores) as resources:
        return inv.job_cls(resources.job_context(StopFlag(), inv.job_settings, inv.run)).status()


def status_report(cp: Checkpoint, lease: dict[str, Any] | None) -> dict[str, Any]:
    percent = None
    if cp.phase_total:
        percent = round(100.0 * cp.phase_done / cp.phase_total, 2)
    return {
        "checkpoint": cp.job_id,
        "job": cp.job,
        "params": cp.params,
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


def reset(inv: Invocation) -> int:
    """Delete the run's checkpoint; refuse (exit 3, like a second worker) while another worker
    holds a live lease on it, unless `--break-lease`."""
    from worker.exceptions import LeaseHeld

    checkpoint_id = inv.run.checkpoint_id
    if not inv.args.yes:
        print(f"refusing to delete checkpoint {checkpoint_id!r} without --yes", file=sys.stderr)
        return 2
    with Resources.open(inv.settings) as resources:
        lease = resources.checkpoints.live_lease(checkpoint_id)
        if lease and not inv.args.break_lease:
            print(
                f"refusing to delete checkpoint {checkpoint_id!r}: run {inv.run.name!r} is being run by "
                f"{lease.get('owner')} (lease valid until {lease.get('expires_at')}); stop that worker, "
                "or pass --break-lease",
                file=sys.stderr,
            )
            return LeaseHeld.exit_code
        if lease:
            # Its next checkpoint save finds the document gone: it stops with LeaseLost (exit 3).
            print(f"--break-lease: deleting it under {lease.get('owner')}, which will stop at its next checkpoint", file=sys.stderr)
        deleted = resources.checkpoints.delete(checkpoint_id)
    print(f"checkpoint {checkpoint_id!r} {'deleted' if deleted else 'did not exist'}; the next run starts over")
    return 0


def _fail(error: Exception, scrubber: log_setup.SecretScrubber) -> int:
    """One line on stderr, and its exit code (1 for an error that is not a WorkerError). Only
    that line: a log event saying the same would print every error twice in `docker logs`."""
    exit_code = error.exit_code if isinstance(error, WorkerError) else WorkerError.exit_code
    # One line: libpq and others put hints on lines of their own.
    message = " ".join(scrubber.scrub(f"{type(error).__name__}: {error}").split())
    print(f"error: {message}", file=sys.stderr)
    return exit_code


def _force_exit(reason: str) -> None:
    """Exit now: the checkpoint covers only finished batches, so abandoning one loses nothing."""
    log.warning("forced exit; the batch in flight will be redone on the next start", reason=reason)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
