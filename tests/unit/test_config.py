import pytest

from worker.config import Settings, TableName, load_settings, require_stores
from worker.exceptions import ConfigError
from worker.jobs.inventory_fields import InventoryFieldsJob

BASE = {"TYPESENSE_API_KEY": "ts-secret-key", "DB_PASSWORD": "pg-secret-pw"}


def load(**env: str) -> Settings:
    return load_settings({**BASE, **env})


def test_defaults_match_seed_004():
    s = load()
    assert s.batch_size == 1000
    assert s.mongo_checkpoint_collection == "inventory_backfill_checkpoint"
    assert s.typesense_collection == "products_search"
    assert s.job == "inventory_fields"
    inventory = InventoryFieldsJob.read_settings({})
    assert inventory.products_table == TableName("public", "products")
    assert inventory.scratch_table == TableName("public", "backfill_index_ids")
    assert (inventory.typesense_page_size, inventory.reconcile_max_passes) == (250, 3)


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("BATCH_SIZE", "abc", "must be an integer"),
        ("BATCH_SIZE", "-5", "must be between 1"),
        ("BATCH_SIZE", "0", "must be between 1"),
        ("DB_PORT", "70000", "between 1 and 65535"),
        ("SLEEP_BETWEEN_BATCHES", "-1", "between 0"),
        ("SLEEP_BETWEEN_BATCHES", "nan", "between 0"),
        ("TYPESENSE_PROTOCOL", "ftp", "must be one of http, https"),
        ("LOG_FORMAT", "xml", "must be one of json, console"),
        ("DRY_RUN", "maybe", "must be true or false"),
        ("MONGO_DB_NAME", "bad name", "plain name"),
    ],
)
def test_each_bad_value_names_the_variable(name, value, words):
    with pytest.raises(ConfigError) as caught:
        load(**{name: value})
    assert caught.value.variable == name
    assert words in str(caught.value)
    assert str(caught.value).startswith(name)


def test_the_api_key_is_required_only_by_a_job_that_uses_typesense():
    settings = load_settings({})
    require_stores(settings, frozenset(), "postgres_only")
    with pytest.raises(ConfigError, match=r"TYPESENSE_API_KEY is required \(job 'inventory_fields' uses typesense\)"):
        require_stores(settings, frozenset({"typesense"}), "inventory_fields")
    require_stores(load(), frozenset({"typesense"}), "inventory_fields")
    with pytest.raises(ConfigError, match="unknown store 'solr'"):
        require_stores(settings, frozenset({"solr"}), "x")


def test_uri_errors_never_echo_the_value():
    with pytest.raises(ConfigError) as caught:
        load(MONGO_URI="http://user:hunter2@host")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load(DATABASE_URL="mysql://user:hunter2@host/db")
    assert "hunter2" not in str(caught.value)


def test_database_url_wins_over_parts():
    s = load(DATABASE_URL="postgresql://u:pw@h:5/d", DB_HOST="other")
    assert s.pg_conninfo() == "postgresql://u:pw@h:5/d"


def test_secrets_include_passwords_inside_uris():
    s = load(MONGO_URI="mongodb://u:mongo-pw@h:27017", DATABASE_URL="postgresql://u:url-pw@h/d")
    assert set(s.secrets()) >= {"ts-secret-key", "pg-secret-pw", "mongo-pw", "url-pw"}


def test_secrets_are_not_in_repr():
    assert "pg-secret-pw" not in repr(load())
    assert "ts-secret-key" not in repr(load())


def test_dry_run_calls_is_a_dry_run_that_calls():
    assert (load(DRY_RUN="calls").dry_run, load(DRY_RUN="calls").dry_run_calls) == (True, True)
    assert (load(DRY_RUN="true").dry_run, load(DRY_RUN="true").dry_run_calls) == (True, False)
