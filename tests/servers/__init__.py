"""Local stand-ins for remote services, started by the tests on loopback ports."""
