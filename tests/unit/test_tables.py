"""The tables each job needs: shipped beside its code, linked from the README, and what every
message about a missing table points to; and no message a user reads speaks of seeds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from worker import tables
from worker.jobs import JOBS

REPO = Path(__file__).resolve().parents[2]
DEFINED = sorted(p.parent.name for p in tables.JOBS_DIR.glob("*/tables.sql"))


def test_every_definition_belongs_to_a_job_and_is_linked_from_the_readme():
    assert DEFINED and set(DEFINED) <= set(JOBS)
    linked = set(re.findall(r"\]\((worker/jobs/\w+/tables\.sql)\)", (REPO / "README.md").read_text()))
    assert linked == {tables.shown(job) for job in DEFINED}
    assert all((REPO / link).is_file() for link in linked)


@pytest.mark.parametrize("job", DEFINED)
def test_a_definition_creates_in_the_current_schema_only(job):
    """Unqualified names: the demos, tests and benchmarks create the tables in a schema of
    their choosing through the search_path."""
    text = re.sub(r"--[^\n]*", "", tables.definition(job))
    created = re.findall(r"CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|MATERIALIZED VIEW|FUNCTION|TRIGGER)\s+([\w.]*)", text, re.IGNORECASE)
    assert created and not [name for name in created if "." in name]


def test_the_missing_table_message_names_the_job_the_variable_and_the_definition():
    message = tables.missing_tables(['"public"."codes"'], "codes_import", "its codes table", "CODES_TABLE")
    assert message == (
        'table "public"."codes" does not exist: job codes_import needs its codes table'
        " (CODES_TABLE; definition: worker/jobs/codes_import/tables.sql)"
    )
    assert tables.missing_tables(["a", "b"], "metrics_migration", "them").startswith("tables a, b do not exist: job metrics_migration")


def _user_facing_strings(path: Path) -> list[str]:
    """The string literals of a module, docstrings left out (they may tell the history)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("package", ["worker", "utils"])
def test_no_message_speaks_of_seeds(package):
    """A user knows jobs and tables, not the seeds they were written from. The demos are left
    out: a demo seeds data, and says so."""
    found = {
        path.relative_to(REPO).as_posix(): hits
        for path in sorted((REPO / package).rglob("*.py"))
        if not path.name.startswith("demo_")
        if (hits := [s for s in _user_facing_strings(path) if re.search(r"\bseed", s, re.IGNORECASE)])
    }
    assert found == {}
