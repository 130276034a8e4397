"""Development tools: `make run`'s supervisor, local processes, audit, chaos, bench, recordings.

The product (the top-level modules and `api/`) imports nothing from here.
"""
