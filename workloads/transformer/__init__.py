"""A decoder-only byte-level language model on the Python standard library's own source."""
