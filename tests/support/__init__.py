"""Helpers for the tests, by purpose: trips, workers, histories, calls, processes, browser."""
