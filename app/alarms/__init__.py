"""Alarms: threshold rules evaluated on every batch before the live cache sees it (``engine.py``).

The hub (app/hub.py) hands each batch to the engine first, so a storage
backlog or a slow page can never delay an alarm. Acknowledgement, "no data"
and slope rules, and escalation are later work that builds on this engine.
"""
