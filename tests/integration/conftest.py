"""Fixtures of the integration tests: a connected bus and a live gateway (see tests/loop.py)."""

from loop import bus, gateway

__all__ = ["bus", "gateway"]
