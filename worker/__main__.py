"""`python -m worker`. SIGTERM and SIGINT are caught before anything else is imported: the
imports take most of a second, and a stop that lands in them (a deploy, `docker compose stop`)
must end the worker cleanly, with a log line and exit 0, not by the signal's default action."""

from worker.stop import catch_early_signals

catch_early_signals()

import sys  # noqa: E402  (after the signals are caught)

from worker.cli import main  # noqa: E402

sys.exit(main())
