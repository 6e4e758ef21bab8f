"""Composition root: settings, CLI and the local stack supervisor."""
