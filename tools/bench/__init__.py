"""The benchmark behind `make bench`: what the HTTP layer, the sandbox and the server settings cost.

On dev servers of its own it runs the same saga several ways, interleaved in
rounds so that a noisy neighbour hurts them all alike. With the simulations
off (a saga of a few tens of ms):

- floor: `execute_workflow` straight from a Python client, no HTTP;
- POST /book, and POST /bookings then polling the status URL, through the
  API served as in production (gunicorn, the product's serving settings);
- connect-per-request: a new `Client.connect` for every booking, the pattern
  the tutorial's earlier variant shows;
- the floor again on the same tuned server in memory (what persistence costs)
  and on a default-configured dev server (what the tuning buys);
- the floor again on the reference worker, the workflow sandbox off
  (`tools/reference_worker.py`): the limit the product's worker is held to;
- the floor again on a worker without a deployment version
  (`tools/unversioned_worker.py`): what versioning costs;
- the floor again on a worker calling the providers' stores in its own
  process (`tools/hopless_worker.py`): what the HTTP hop costs; and on one
  calling a provider service of its own process (`make run`'s picture).

Each runs one at a time and at `--concurrency`. Then what `make run` runs,
the demo saga (0.3 s per provider call and the hotel down on its first
attempt: about 2 s; the providers a service), at `--demo-concurrency` on a stack of its own: its
floor and POST /book, each followed by the same on a twin stack that traces (its worker,
providers and API exporting spans to the benchmark's OTLP collector,
`tools/bench/collector.py`), against the untraced row. All after a warm-up.
Each demo row's CPU is read once the collector has settled (nothing
received for a while): a traced row's includes its last exports, and the
next row does not share the machine with them.

It prints a table (throughput, p50/p95/p99, CPU seconds per booking of the
server, the worker and the API, peak memory, ratios to the floor), how the
demo's sagas in flight relate to the API's processes x threads, the spans
the collector received per traced booking and its CPU, and the targets with their
margins; writes JSON and draws a PNG. Only ratios from
one run mean anything on a shared machine.
"""
