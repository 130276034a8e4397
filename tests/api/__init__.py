"""Tests of the API package, a module per module."""
