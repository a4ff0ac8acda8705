"""Dashboards: layout specs (YAML), widget kinds, and their live Panel views."""
