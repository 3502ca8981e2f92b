"""Helpers shared by the integration and e2e tests (tests/ is on sys.path: `from support... import`)."""
