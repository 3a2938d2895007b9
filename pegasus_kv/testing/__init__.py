"""Test harness shipped with the package: history checkers, cluster launchers, fault injection."""
