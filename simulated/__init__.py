"""The simulated car rental, hotel and airline, served over HTTP by `providers.py`.

`store` keeps one provider's reservations, `faults` says how the providers
misbehave, `service` is their HTTP API.
"""
