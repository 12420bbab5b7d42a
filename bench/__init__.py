"""Benchmark of the inventory_fields backfill: worker vs a plain-loop baseline vs the limit.

Run ``python -m bench.run --rows 100000`` (see bench/README.md). Modules:

* ``bench.run``      - the harness: servers, reseeding, timing, RSS, the table of results.
* ``bench.baseline`` - the job as a plain sequential loop of 1,000-row batches (a subprocess).
* ``bench.limit``    - one UPDATE + one bulk import (+ one-shot index-only step) (a subprocess).
* ``bench.common``   - names and small helpers shared by the three.
"""
