"""Replication: the pure PacificA cores (pacifica/) and the server runtimes that drive them."""
