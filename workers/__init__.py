"""Tier workers: Kafka consumers that call a model engine (a Ray Serve deployment per tier)."""
