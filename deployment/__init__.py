"""The saga's worker deployment: its versions, the current one, and bookings that cannot move.

Each change to the saga's code is a new version of the deployment (its build
id is a digest of the saga's modules, `code_build_id`), and
every booking is pinned to the version it started on: a run never meets
code other than its own, so a changed saga is deployed while bookings run.
New bookings go to the deployment's current version; an old version drains
as its bookings end (docs/operating.md, "Deploying a changed saga").

A booking can still be stranded (its version's workers gone; or workers
that cannot replay it, after a change made without a new version):
`stuck` finds such bookings, for the worker's log and metric and the API's
`/readyz`, and `waiting_for` says what one of them waits for.
"""
