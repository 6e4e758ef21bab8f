"""Offline evaluation of routers: the bench harness, curve metrics, report tables and query splits.

Only the bench, the CLI and scripts use this; the live router (`router.artifact`, `router.learned`
and what they import) never imports it.
"""
