"""The tests: one real Temporal dev server per session, a module per product module or job."""
