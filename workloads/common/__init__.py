"""Helpers shared by the built-in families (digits data, digits-FID, payloads, PNG grids).

Importing this package imports no torch; the submodules that need torch import it inside
their functions or are only imported from inside a family's functions.
"""
