"""Meta server runtime: meta stores (local file, ZooKeeper) and the I/O around the pure meta core."""
