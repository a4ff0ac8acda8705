"""Ingest sources: MQTT, OPC-UA, HTTP and the built-in simulators."""
