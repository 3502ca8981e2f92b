"""The `trainyard` command: noun-verb, thin over the SDK (trainyard.sdk.Client).

Imports no torch, and nothing heavy at module level, so `trainyard --help` is instant.
"""
