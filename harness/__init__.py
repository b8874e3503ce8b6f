"""Scones harness: the `scones` CLI, the local target (LocalStack + endpoint server) and the pytest plugin."""
