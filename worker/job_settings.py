"""A job's own settings and run parameters: declared by the job, read like the global ones.

A job declares its settings as a frozen dataclass whose fields are `setting(...)`s: the
variable, its default (the field's), one line of help, bounds or choices. The field's type says
how the value is read: `str`, `int`, `float`, `bool`, `Path`, `TableName`, or one of those
`| None`. They are read from the environment (and `.env`) through the same reader as the global
settings, so a bad value is one line naming the variable, exit 2, never echoing a secret.

A setting with a `flag` is also a command-line option of the job's commands (`--source PATH`,
`--force`): the flag wins over the variable. A setting marked `identity` defines the run's
work: the run's checkpoint, failures and tables are its own, so importing another file is a new
run and running the same file again resumes it (see `Run`).
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Mapping

from worker.config import EnvReader, TableName
from worker.exceptions import ConfigError


@dataclass(frozen=True)
class Spec:
    """How one job setting is read and documented (see `setting`)."""

    env: str
    help: str
    flag: str | None = None
    identity: bool = False
    required: bool = False
    secret: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


def setting(env: str, default: Any, help: str, **spec: Any) -> Any:
    """A field of a job's settings dataclass: read from variable `env`, else `default`.

    Keywords: `flag="--source"` (also a command-line option), `identity=True` (part of the
    run's identity), `required=True` (no default: a missing value is a configuration error),
    `secret=True` (never logged; documented without its value), `minimum`/`maximum` (numbers),
    `choices` (text)."""
    return field(default=default, metadata={"setting": Spec(env, help, **spec)})


@dataclass(frozen=True)
class Declared:
    """One field of a settings dataclass with what it says about itself."""

    name: str
    kind: type
    optional: bool
    default: Any
    spec: Spec


def declared(settings_class: type | None) -> list[Declared]:
    """The settings a job declares, in declaration order (none for `None`)."""
    if settings_class is None:
        return []
    hints = typing.get_type_hints(settings_class)
    found = []
    for f in fields(settings_class):
        if "setting" not in f.metadata:
            raise TypeError(f"{settings_class.__name__}.{f.name} is not declared with setting(...)")
        kind, optional = _unwrap(hints[f.name])
        default = None if f.default is MISSING else f.default
        found.append(Declared(f.name, kind, optional, default, f.metadata["setting"]))
    return found


def _unwrap(hint: Any) -> tuple[type, bool]:
    """`X | None` -> (X, True); `X` -> (X, False)."""
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        if len(args) != 1:
            raise TypeError(f"unsupported setting type {hint!r}")
        return args[0], True
    return hint, False


def read_job_settings(
    settings_class: type | None, env: Mapping[str, str], flags: Mapping[str, Any] | None = None, required: bool = True
) -> Any:
    """The job's settings from `env`, each overridden by its command-line flag when given
    (`flags`: field name -> the flag's value, None when not given). None for a job without
    settings. Raises ConfigError naming the variable (or the flag) for a bad value, and for a
    required one that is missing unless not `required` (a command that lists every run)."""
    if settings_class is None:
        return None
    flags = flags or {}
    values = {}
    for d in declared(settings_class):
        given = flags.get(d.name)
        if given is not None:
            label = d.spec.flag or d.name
            values[d.name] = _read(d, EnvReader({label: given if isinstance(given, str) else _text(given)}), label, required)
        else:
            values[d.name] = _read(d, EnvReader(env), d.spec.env, required)
    return settings_class(**values)


def _read(d: Declared, r: EnvReader, name: str, required: bool) -> Any:
    if r.raw(name) is None:
        if d.spec.required and required:
            raise ConfigError(name, f"is required: {d.spec.help}")
        return d.default
    low = float("-inf") if d.spec.minimum is None else d.spec.minimum
    if d.kind is bool:
        return r.flag(name, bool(d.default))
    if d.kind in (int, float):
        return r.number(name, d.default, d.kind, low, d.spec.maximum)
    if d.kind is TableName:
        return r.table(name, str(d.default))
    if d.kind is Path:
        return Path(r.text(name, "")).expanduser().resolve()
    if d.kind is str:
        if d.spec.choices:
            return r.choice(name, str(d.default), d.spec.choices)
        return r.text(name, d.default)
    raise TypeError(f"setting {d.name}: unsupported type {d.kind!r}")


def _text(value: Any) -> str:
    """A value as its variable would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def secrets(values: Any) -> list[str]:
    """The values of the settings declared secret, for the log scrubber."""
    return [str(getattr(values, d.name)) for d in declared(type(values) if values is not None else None) if d.spec.secret and getattr(values, d.name)]


@dataclass(frozen=True)
class Run:
    """One run of a job: the job plus the settings that define its work (`identity`), each
    given as text. A job without such settings (or with them all at their defaults) has one
    run, named like the job, with the job's own checkpoint id, so adding an identity setting
    later leaves existing checkpoints where they are. Otherwise the run's `tag` (a digest of
    its parameters) tells its checkpoint, recorded failures and tables from other runs'."""

    job: str
    base_checkpoint_id: str
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, job: str, checkpoint_id: str, values: Any) -> "Run":
        """The run the settings `values` describe."""
        params = {
            d.spec.env: _text(getattr(values, d.name))
            for d in declared(type(values) if values is not None else None)
            if d.spec.identity and getattr(values, d.name) != d.default
        }
        return cls(job, checkpoint_id, params)

    @property
    def tag(self) -> str:
        """12 hex digits naming this run's parameters; "" for the job's default run."""
        if not self.params:
            return ""
        return hashlib.sha256(json.dumps(dict(self.params), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        """The job, or `job:tag`: what failures are recorded under."""
        return f"{self.job}:{self.tag}" if self.tag else self.job

    @property
    def checkpoint_id(self) -> str:
        return f"{self.base_checkpoint_id}:{self.tag}" if self.tag else self.base_checkpoint_id


def env_section(job: str, settings_class: type | None) -> str:
    """The job's section of `.env.example`: its settings with their defaults and help."""
    lines = [f"# --- Job {job} ---"]
    for d in declared(settings_class):
        help = d.spec.help + (f" Command-line flag: {d.spec.flag}." if d.spec.flag else "")
        lines += [f"# {line}" for line in textwrap.wrap(help, 96)]
        value = "" if d.default is None or d.spec.secret else _text(d.default)
        lines.append(f"{d.spec.env}={value}" if value or d.spec.required else f"#{d.spec.env}=")
    return "\n".join(lines) + "\n"


def readme_section(job: str, settings_class: type | None) -> str:
    """The job's table of settings for the README."""
    lines = [f"Settings of `{job}`:", "", "| variable | flag | default | meaning |", "|---|---|---|---|"]
    for d in declared(settings_class):
        default = "(required)" if d.spec.required else "" if d.default is None else f"`{_text(d.default)}`"
        flag = f"`{d.spec.flag}`" if d.spec.flag else ""
        note = " Defines the run." if d.spec.identity else ""
        lines.append(f"| `{d.spec.env}` | {flag} | {default} | {d.spec.help}{note} |")
    return "\n".join(lines) + "\n"
