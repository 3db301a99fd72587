"""Shared test configuration: the local servers are fixtures for every test."""

pytest_plugins = [
    "tests.servers.smtp",
    "tests.servers.webhook",
]
