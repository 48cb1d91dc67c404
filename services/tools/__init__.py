"""Observation tools that work against any NATS: ``wva tail``, ``wva top``, ``wva record``."""
