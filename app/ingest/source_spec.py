"""What every source kind's config declares, and the one registry of source kinds.

A source kind (``mqtt``, ``opcua``...) is declared once, as a
:class:`SourceSpec` subclass beside its source: its ``spec_type`` is the
config section that lists its instances, its parameters are the keys that
section accepts (checked with file, line and key path like every other
section), and :meth:`SourceSpec.build` makes the running source. The config
loader, the runtime and ``vigie check-config`` read this registry instead of
naming each kind, so a new kind is one module, not edits in four places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import param

from app.spec import Spec

if TYPE_CHECKING:
    from app.cameras import CameraStore
    from app.hub import Hub
    from app.ingest.base import Source


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a source needs from the runtime when it is built."""

    hub: Hub
    secret: Any  # LoadedConfig.secret: env variable name -> value (checked at load time)
    cameras: CameraStore | None = None


class SourceSpec(Spec):
    """One configured instance of a source kind; subclasses set ``spec_type`` (their config section)."""

    _kinds: ClassVar[dict[str, type[Spec]] | None] = {}

    name = param.String(default="source", doc="The source's name in health, logs and alarms.")
    expected_interval_s = param.Number(default=None, allow_None=True, bounds=(1, None), doc=(
        "How often this source's series report: a no-data rule without its own timeout_s raises after this."))

    @classmethod
    def keys(cls) -> list[str]:
        return [k for k in cls.param]  # ``name`` is a real key of a source

    def build(self, ctx: BuildContext) -> Source:
        """Return the source this spec describes (not started)."""
        raise NotImplementedError

    def summary(self) -> str:
        """Return a few words for ``vigie check-config`` (e.g. "3 subscriptions")."""
        return self.name


def source_kinds() -> dict[str, type[SourceSpec]]:
    """Return every source kind by its config section, importing the modules that declare them."""
    from app.ingest import mqtt_spec, opcua_spec, sparkplug_spec  # noqa: F401  (each registers its kind)

    return {k: v for k, v in SourceSpec.kinds().items() if issubclass(v, SourceSpec)}  # type: ignore[misc]
