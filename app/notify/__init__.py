"""Notifications' seat (a later issue): mail, SMS and voice through apprise, with escalation cascades.

Nothing here yet: the config sections ``contacts`` and ``escalation`` are
accepted but not read (app/config.py).
"""
