"""Fuzz the worker's server for longer than the tests do: mutated frames before and after
authentication against a server in this process (see fuzzlib), then the counts.

    python scripts/fuzz_server.py [--frames 20000] [--seed 0]

Prints the frames sent, the well-framed requests among them, the replies, the errors by
code, the connections the server dropped and every failure; exits with 1 when there is one.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from fuzzlib import HANDLERS, fuzz
from raw_client import serving


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000, help="frames to send")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    args = parser.parse_args()
    # Every dropped connection is logged; only errors matter here, and the fuzzer counts them.
    logging.getLogger("external_worker.server").setLevel(logging.ERROR)
    started = time.monotonic()
    with serving(HANDLERS) as running:
        counts = fuzz(running.port, args.frames, args.seed)
    print(counts.report())
    print(f"seconds: {time.monotonic() - started:.1f}")
    return 1 if counts.failures else 0


if __name__ == "__main__":
    sys.exit(main())
