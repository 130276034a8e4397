"""A worker without a deployment version: `run_worker.py`'s worker as it was before versions.

A tool, never the product: a changed saga deployed by restarting such a
worker strands every booking in flight (tests/test_deploy.py's negative
control), and `make bench` runs the saga on it to measure what versioning
costs ("floor, unversioned").
"""

import argparse
import asyncio
import sys

import run_worker
from config import ConfigError

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    try:
        asyncio.run(run_worker.main(versioned=False))
    except ConfigError as err:
        sys.exit(f"unversioned_worker: {err}")
