"""pytest plugin (entry point `pytest11: scones`): fixtures that bring the local stack up and hand tests clients and names."""
