import io
import json

import psycopg
import pytest
import structlog

from utils import logging as log_setup
from utils.logging import REDACTED, SecretScrubber
from worker.config import load_settings


def configured(secrets) -> io.StringIO:
    out = io.StringIO()
    log_setup.configure("json", "INFO", secrets, stream=out)
    return out


def test_secrets_are_scrubbed_from_every_field():
    out = configured(["s3cr3t", "k3y"])
    structlog.get_logger("t").error(
        "failed", error="could not connect to postgresql://u:s3cr3t@h", nested={"api_key": ["k3y"], "key": ["k3y"]}
    )
    event = json.loads(out.getvalue().strip())
    assert event["error"] == "could not connect to postgresql://u:***@h"
    assert event["nested"] == {"api_key": "***", "key": ["k3y"]}, "a row's `key` is not a secret"


def test_the_demo_password_postgres_is_redacted_only_where_it_is_a_password():
    settings = load_settings({"DB_PASSWORD": "postgres", "TYPESENSE_API_KEY": "demo-key", "MONGO_URI": "mongodb://mongo:27017"})
    out = configured(settings.secrets())
    structlog.get_logger("t").warning(
        "retrying",
        service="postgres",
        database="postgres",
        error='connection failed: FATAL:  password authentication failed for user "postgres"',
        conninfo="host=db dbname=postgres user=postgres password=postgres",
        url="postgresql://postgres:postgres@db:5432/postgres",
        password="postgres",
    )
    line = out.getvalue().strip()
    event = json.loads(line)
    assert event["service"] == "postgres" and event["database"] == "postgres"
    assert event["error"] == 'connection failed: FATAL:  password authentication failed for user "postgres"'
    assert event["conninfo"] == "host=db dbname=postgres user=postgres password=***"
    assert event["url"] == "postgresql://postgres:***@db:5432/postgres"
    assert event["password"] == "***"
    assert "demo-key" not in line


SHAPES = [
    # URL userinfo, any scheme, even an unescaped `@` in the password
    ("could not connect to postgresql://u:s3cr3t@h:5432/d?sslmode=require", "could not connect to postgresql://u:***@h:5432/d?sslmode=require"),
    ("mongodb://admin:pw@m1:27017,m2:27017/?authSource=admin", "mongodb://admin:***@m1:27017,m2:27017/?authSource=admin"),
    ("mongodb+srv://u:p@ss@cluster.example", "mongodb+srv://u:***@cluster.example"),
    ("http://:key@typesense:8108/health", "http://:***@typesense:8108/health"),
    # libpq conninfo and URI query parameters
    ("host=h port=5432 password=pg-pw sslmode=require", "host=h port=5432 password=*** sslmode=require"),
    ("host=h password='a b\\' c' dbname=d", "host=h password='***' dbname=d"),
    ("postgresql://h/d?user=u&password=pw&sslmode=require", "postgresql://h/d?user=u&password=***&sslmode=require"),
    ("sslpassword=key-pw host=h", "sslpassword=*** host=h"),
    ("TYPESENSE_API_KEY=abc DB_PASSWORD=def DB_USER=postgres", "TYPESENSE_API_KEY=*** DB_PASSWORD=*** DB_USER=postgres"),
    # reprs and JSON with secret-named keys
    ("{'nodes': [{'host': 'ts'}], 'api_key': 'abc', 'num_retries': 0}", "{'nodes': [{'host': 'ts'}], 'api_key': '***', 'num_retries': 0}"),
    ('{"user": "postgres", "password": "x y"}', '{"user": "postgres", "password": "***"}'),
    ("Headers({'x-typesense-api-key': 'abc'})", "Headers({'x-typesense-api-key': '***'})"),
    ("[(b'X-TYPESENSE-API-KEY', b'abc')]", "[(b'X-TYPESENSE-API-KEY', b'***')]"),
    # HTTP header lines
    ("X-TYPESENSE-API-KEY: abc123\nAccept: */*", "X-TYPESENSE-API-KEY: ***\nAccept: */*"),
    ("x-typesense-api-key:abc", "x-typesense-api-key:***"),
    ("Authorization: Bearer tok123", "Authorization: Bearer ***"),
    # what libpq quotes of a connection string it cannot parse
    ('invalid percent-encoded token: "p%zzpw"', 'invalid percent-encoded token: "***"'),
    ('unexpected spaces found in "my pw", use percent-encoded spaces (%20) instead', 'unexpected spaces found in "***", use percent-encoded spaces (%20) instead'),
]


@pytest.mark.parametrize("text, expected", SHAPES)
def test_secrets_are_found_by_their_shape(text, expected):
    assert SecretScrubber().scrub(text) == expected


UNTOUCHED = [
    "service=postgres",
    "Typesense refused TYPESENSE_API_KEY: Forbidden - a valid `x-typesense-api-key` header must be sent.",
    'Postgres refused DB_USER/DB_PASSWORD: FATAL:  password authentication failed for user "postgres"',
    "TYPESENSE_API_KEY is required",
    "http://127.0.0.1:8108/collections/p/documents/export?filter_by=id:[`a@b.example`]&include_fields=id",
    "key=7 first_key=8 last_id='k'",
    "missing fields ['token', 'name']",
    'Token "x" is invalid.',
    "products: all 40 rows of the batch failed, e.g. key 1: CheckViolation",
]


@pytest.mark.parametrize("text", UNTOUCHED)
def test_nothing_else_is_mangled(text):
    assert SecretScrubber(["postgres", "s3cr3t"]).scrub(text) == text


def test_secret_named_keys_are_redacted_at_any_depth_and_nothing_else():
    scrubber = SecretScrubber()
    event = {
        "event": "x",
        "password": "postgres",
        "db_password": 1,
        "x-typesense-api-key": "k",
        "nested": {"Authorization": "Basic abc", "api_key": ["a"], "token": None, "first_key": "postgres", "key": "k"},
        "rows": [{"secret": "s", "id": 1}],
    }
    assert scrubber(None, "error", event) == {
        "event": "x",
        "password": REDACTED,
        "db_password": REDACTED,
        "x-typesense-api-key": REDACTED,
        "nested": {"Authorization": REDACTED, "api_key": REDACTED, "token": None, "first_key": "postgres", "key": "k"},
        "rows": [{"secret": REDACTED, "id": 1}],
    }


def test_only_secret_values_specific_enough_are_searched_for_anywhere():
    scrubber = SecretScrubber(["postgres", "s3cr3t", "demo-key", "correcthorsebatterystaple"])
    said = "postgres s3cr3t demo-key correcthorsebatterystaple"
    assert scrubber.scrub(f"echoed: {said}") == "echoed: postgres s3cr3t *** ***"
    assert [log_setup.specific(s) for s in ("postgres", "12345678", "s3cr3t", "demo-key", "Tr0ub4dor")] == [
        False, False, False, True, True,
    ]


def test_an_object_logged_as_it_is_is_scrubbed_by_its_text():
    scrubber = SecretScrubber()
    error = ValueError("cannot use postgresql://u:pw@h/d")
    assert scrubber.scrub(error) == "cannot use postgresql://u:***@h/d"
    assert scrubber.scrub(ValueError("plain")).args == ("plain",), "left as it is when nothing leaks"


@pytest.mark.parametrize(
    "password",
    ["my pw with spaces", "p%zz", "p%zzlonger-pass"],
)
def test_what_psycopg_says_about_a_bad_database_url_never_shows_the_password(password):
    url = f"postgresql://u:{password}@127.0.0.1:1/d"
    settings = load_settings({"DATABASE_URL": url, "TYPESENSE_API_KEY": "k"})
    with pytest.raises(psycopg.Error) as caught:
        psycopg.connect(url, connect_timeout=1)
    assert password in str(caught.value), "libpq quotes it: the scrubber must catch this shape"
    scrubbed = SecretScrubber(settings.secrets()).scrub(f"{type(caught.value).__name__}: {caught.value}")
    assert password not in scrubbed and REDACTED in scrubbed


def test_secrets_include_uri_passwords_as_written_and_decoded():
    s = load_settings(
        {"TYPESENSE_API_KEY": "k", "MONGO_URI": "mongodb://u:a%40b+c@h", "DATABASE_URL": "postgresql://u:x%2Fy@h/d"}
    )
    assert {"a%40b+c", "a@b+c", "a@b c", "x%2Fy", "x/y"} <= set(s.secrets())
