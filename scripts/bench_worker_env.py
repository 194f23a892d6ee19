"""Time Create Worker Environment: build the worker's environment from the shipped requirements
the way the add-on does (`blender_dff.worker.build`), then probe it. Downloads several GB unless
the packages are cached or mirrored.

    python scripts/bench_worker_env.py [--variant cuda|cpu] [--python /path/to/python3.11] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from blender_dff.worker import environment as worker_env
from blender_dff.worker.build import EnvironmentBuild


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="cuda", choices=worker_env.VARIANTS)
    parser.add_argument("--python", default=sys.executable,
                        help="the Python the environment is made from (in Blender: Blender's own)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="build into this folder and keep it (default: a temporary folder, removed)")
    args = parser.parse_args()
    scratch = None if args.keep else Path(tempfile.mkdtemp(prefix="dff-worker-env-"))
    env_dir = args.keep or scratch / "worker_env"
    try:
        start = time.perf_counter()
        build = EnvironmentBuild(env_dir, args.python, variant=args.variant).start()
        with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}") as bar:
            while not build.wait(0.5):
                bar.n = round(100 * build.fraction)
                bar.set_description(build.message[:50])
        seconds = time.perf_counter() - start
        if build.error:
            print(f"failed after {seconds:.0f} s: {build.error}")
            return 1
        print(f"environment created in {seconds:.0f} s ({args.variant}, from {args.python})")
        start = time.perf_counter()
        report = worker_env.probe(build.python)
        print(f"probe: {report.summary} ({time.perf_counter() - start:.1f} s)")
        return 0 if report.ok else 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
