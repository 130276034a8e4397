"""The benchmark's reference worker: `run_worker.py`'s worker with the workflow sandbox off.

A tool, never the product: the sandbox is what catches non-deterministic
workflow code, and the product keeps it. `make bench` runs the same saga on
this worker to measure what the sandbox costs ("floor, sandbox off").
"""

import argparse
import asyncio
import sys

from temporalio.worker import UnsandboxedWorkflowRunner

import run_worker
from config import ConfigError

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    try:
        # The same process as run_worker.py's, logs and "Worker polling" line
        # included, so that the two differ in the sandbox alone.
        asyncio.run(run_worker.main(UnsandboxedWorkflowRunner()))
    except ConfigError as err:
        sys.exit(f"reference_worker: {err}")
