"""Vigie: supervision platform for industrial and municipal IoT."""

__version__ = "0.1.0"
