"""Storage of readings: one interface (:class:`StoreEngine`), two engines."""

from app.store.base import StoreEngine, StoreUnavailable

__all__ = ["StoreEngine", "StoreUnavailable"]
