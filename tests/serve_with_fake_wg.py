"""Serve the real wg-fleet app through `serving.bind_socket` + `serving.serve`, with the
fake `wg` runner, on an ephemeral port of `::`; prints the port, then serves until SIGTERM.

    python -m tests.serve_with_fake_wg CONFIG.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

from config import ListenConfig, load_config
from main import create_app
from serving import bind_socket, serve
from tests.fakes import FakeWireGuard


def main() -> int:
    config = load_config(Path(sys.argv[1]), {})
    # Port 0 (the kernel picks one) is below ListenConfig's range, hence model_construct.
    sock = bind_socket(ListenConfig.model_construct(host="::", port=0))
    print(sock.getsockname()[1], flush=True)  # noqa: T201 - the port, for the test
    return serve(create_app(config, runner=FakeWireGuard()), sock, "warning")


if __name__ == "__main__":
    sys.exit(main())
