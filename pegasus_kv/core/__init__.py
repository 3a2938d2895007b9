"""I/O-free vocabulary shared by every process: ids, schema, hashing, messages, codec, errors.

Nothing under this package may import a module that does I/O (DESIGN.md section 2); a unit test
walks the imports and enforces it.
"""
