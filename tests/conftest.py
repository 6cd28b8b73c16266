"""Shared pytest setup. Fixtures live beside the servers they start (tests/feedserver.py, ...)."""
