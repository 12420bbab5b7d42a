"""Every error the worker raises on purpose, each with the exit code the CLI maps it to.

Distinct exit codes let an operator (or `restart: unless-stopped`) tell "fix the config" from
"a server is down, try again later" without reading the logs.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class; `exit_code` is what `python -m worker` exits with."""

    exit_code = 1


class ConfigError(WorkerError):
    """A variable is missing or malformed. Raised before any connection is made."""

    exit_code = 2

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable} {problem}")


class LeaseHeld(WorkerError):
    """Another worker holds this job's lease; running too would have both write the same range."""

    exit_code = 3

    def __init__(self, job: str, owner: str, expires_at: object):
        self.job, self.owner, self.expires_at = job, owner, expires_at
        super().__init__(
            f"job {job!r} is being run by {owner} (lease valid until {expires_at}); "
            "stop that worker or wait for its lease to expire"
        )


class LeaseLost(WorkerError):
    """Our lease was taken over (we were presumed dead); stop before overwriting the new owner."""

    exit_code = 3


class ServiceUnavailable(WorkerError):
    """A server stayed unreachable after every retry. The last checkpoint is intact."""

    exit_code = 4

    def __init__(self, service: str, cause: BaseException):
        self.service = service
        self.cause = cause
        super().__init__(f"{service} unavailable after retries: {type(cause).__name__}: {cause}")


class SchemaMismatch(WorkerError):
    """The table, collection or a field is missing or has the wrong type."""

    exit_code = 5


class AccessDenied(WorkerError):
    """A server refused our credentials."""

    exit_code = 6


class SystemicBatchError(WorkerError):
    """Every row of a batch failed alike: a bug or a broken table, not a few bad rows. The job
    stops (its checkpoint stays before that batch) instead of recording every row as failed."""

    exit_code = 7


class VerificationFailed(WorkerError):
    """A verify step found the stores disagreeing: the run fails with the step's summary, and
    its checkpoint stays before the step, so a run after the cause is fixed verifies again."""

    exit_code = 8


class SourceError(WorkerError):
    """A file source cannot be staged at all (no such file or directory, an unreadable file, a
    staging table with other columns)."""


class SourceMissing(SourceError):
    """The source path does not exist: the configuration names the wrong path, or the files
    were never mounted. No restart finds them, so it exits like a configuration error."""

    exit_code = 2


class SourceChanged(SourceError):
    """A file already staged is not what it was: restaging it would mix two versions."""


class UnknownPhase(WorkerError):
    """The checkpoint names a phase this job does not have (the job changed under it)."""


class UnknownJob(ConfigError):
    def __init__(self, name: str, known: list[str]):
        super().__init__("JOB", f"names no known job: {name!r} (known: {', '.join(known)})")
