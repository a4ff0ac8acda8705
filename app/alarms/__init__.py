"""The alarm engine's seat (a later issue): rules evaluated on every reading before the live cache sees it.

The hub (app/hub.py) already hands each batch to ``alarms`` first, so a
storage backlog or a slow page can never delay an alarm; until the engine
exists that seat is empty and the dashboards show "no alarm engine".
"""
