"""`pegasus-kv bench`: YCSB core workloads against a pegasus-kv cluster."""
