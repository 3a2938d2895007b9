"""Replica server runtime: the mutation log and the I/O around the pure PacificA replica core."""
