import io
import json

import structlog

from utils import logging as log_setup


def test_secrets_are_scrubbed_from_every_field():
    out = io.StringIO()
    log_setup.configure("json", "INFO", ["s3cr3t", "k3y"], stream=out)
    structlog.get_logger("t").error(
        "failed", error="could not connect to postgresql://u:s3cr3t@h", nested={"key": ["k3y"]}
    )
    line = out.getvalue().strip()
    assert "s3cr3t" not in line and "k3y" not in line
    event = json.loads(line)
    assert event["error"] == "could not connect to postgresql://u:***@h"
    assert event["nested"] == {"key": ["***"]}
