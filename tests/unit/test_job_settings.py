"""A job's own settings: declared once, read and validated like the global ones, documented
in `.env.example` and the README from the declaration, and naming the run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker.config import TableName
from worker.exceptions import ConfigError
from worker.job_settings import Run, env_section, read_job_settings, readme_section, secrets, setting
from worker.jobs import JOBS, job_class

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ImportSettings:
    source: Path | None = setting("IMPORT_SOURCE", None, "File to import.", flag="--source", identity=True, required=True)
    force: bool = setting("IMPORT_FORCE", False, "Replace instead of adding.", flag="--force", identity=True)
    table: TableName = setting("IMPORT_TABLE", TableName("public", "facts"), "Destination table.")
    chunk: int = setting("IMPORT_CHUNK", 500, "Rows per chunk.", minimum=1, maximum=10_000)
    mode: str = setting("IMPORT_MODE", "fast", "fast or safe.", choices=("fast", "safe"))
    api_key: str | None = setting("IMPORT_API_KEY", None, "Provider key.", secret=True)


def read(env: dict[str, str], **flags: object) -> ImportSettings:
    return read_job_settings(ImportSettings, {"IMPORT_SOURCE": "data.jsonl", **env}, flags)


def test_values_are_read_by_type_with_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = read({"IMPORT_TABLE": "items", "IMPORT_CHUNK": "20", "IMPORT_FORCE": "yes", "IMPORT_MODE": "SAFE"})
    assert s == ImportSettings(tmp_path / "data.jsonl", True, TableName("public", "items"), 20, "safe", None)


def test_a_flag_wins_over_its_variable_and_errors_name_the_flag():
    assert read({"IMPORT_FORCE": "false"}, force=True).force is True
    assert read({}, source="/data/other.jsonl").source == Path("/data/other.jsonl")
    with pytest.raises(ConfigError) as caught:
        read_job_settings(ImportSettings, {}, {"chunk": None, "source": None})
    assert str(caught.value) == "IMPORT_SOURCE is required: File to import."


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("IMPORT_CHUNK", "0", "must be between 1 and 10000"),
        ("IMPORT_CHUNK", "many", "must be an integer"),
        ("IMPORT_FORCE", "perhaps", "must be true or false"),
        ("IMPORT_MODE", "reckless", "must be one of fast, safe"),
        ("IMPORT_TABLE", "public.facts; drop table x", "schema.table"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name, value, words):
    with pytest.raises(ConfigError) as caught:
        read({name: value})
    assert caught.value.variable == name and words in str(caught.value)


def test_secret_values_go_to_the_scrubber():
    assert secrets(read({"IMPORT_API_KEY": "sk-live-123456"})) == ["sk-live-123456"]
    assert secrets(read({})) == [] and secrets(None) == []


def test_the_run_is_named_by_its_identity_settings_only():
    a = Run.of("import", "import_cp", read({}, source="/data/a.jsonl"))
    assert a.params == {"IMPORT_SOURCE": "/data/a.jsonl"}  # force at its default is left out
    assert a == Run.of("import", "import_cp", read({"IMPORT_CHUNK": "7", "IMPORT_TABLE": "x"}, source="/data/a.jsonl"))
    b = Run.of("import", "import_cp", read({}, source="/data/b.jsonl"))
    forced = Run.of("import", "import_cp", read({}, source="/data/a.jsonl", force=True))
    assert len({a.checkpoint_id, b.checkpoint_id, forced.checkpoint_id}) == 3
    assert re.fullmatch(r"import_cp:[0-9a-f]{12}", a.checkpoint_id) and a.name == f"import:{a.tag}"


def test_a_job_without_run_parameters_keeps_its_checkpoint_id():
    inventory = job_class("inventory_fields")
    run = Run.of(inventory.name, inventory.checkpoint_id, inventory.read_settings({"PRODUCTS_TABLE": "items"}))
    assert (run.checkpoint_id, run.name, run.params) == ("backfill_inventory_fields", "inventory_fields", {})


@pytest.mark.parametrize("document, render", [(".env.example", env_section), ("README.md", readme_section)])
@pytest.mark.parametrize("job", sorted(JOBS))
def test_each_jobs_settings_are_documented_as_declared(job, document, render):
    section = render(job, job_class(job).settings_class)
    text = (REPO / document).read_text()
    assert section in text, f"{document} lacks or differs from:\n{section}"
    after = text[text.index(section) + len(section):]
    assert after == "" or after.startswith("\n"), f"the section of {job} in {document} has lines it does not declare"


@pytest.mark.parametrize("name", sorted(JOBS))
def test_each_registered_job_is_the_class_of_its_name(name):
    assert job_class(name).name == name
