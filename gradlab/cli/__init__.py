"""The command-line interface: thin wrappers around library functions."""
