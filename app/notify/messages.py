"""What a notification says: what, where, how bad, since when, in the recipient's language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from app.i18n import N_, t

# The texts are in the message catalog (app/locale), with the pages' labels: a severity reads as on the pages.
TITLE = N_("Vigie: {n} alarm(s) {where}")
LINE = N_("- {device} {metric} = {value}{unit} (limit {limit}), severity {severity}, since {since}: {message}")
ACK = N_("Acknowledge (stops the escalation): {url}")
STEP = N_("Step {step} of policy {policy}.")
TEST = "[TEST] "


@dataclass(frozen=True, slots=True)
class AlarmFacts:
    """One alarm as a message tells it (copied from its event, kept in the cascade)."""

    alarm_id: str
    device: str
    metric: str
    site: str | None
    severity: str
    value: float | None
    unit: str
    limit: float | None
    since_ns: int
    message: str

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]


def _num(v: float | None) -> str:
    return "?" if v is None else f"{v:g}"


def compose(alarms: list[AlarmFacts], lang: str, tz: ZoneInfo, *, step: int, policy: str, ack_url: str,
            test: bool = False) -> tuple[str, str]:
    """Return (title, body) for one recipient."""
    sites = sorted({a.site for a in alarms if a.site})
    where = "@ " + ", ".join(sites) if sites else "@ " + ", ".join(sorted({a.device for a in alarms}))
    title = (TEST if test else "") + t(TITLE, lang).format(n=len(alarms), where=where)
    lines = []
    for a in alarms:
        since = datetime.fromtimestamp(a.since_ns / 1e9, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        lines.append(t(LINE, lang).format(device=a.device, metric=a.metric, value=_num(a.value),
                                          unit=f" {a.unit}" if a.unit else "", limit=_num(a.limit),
                                          severity=t(a.severity, lang), since=since, message=a.message))
    body = "\n".join([title, *lines, t(STEP, lang).format(step=step + 1, policy=policy),
                      t(ACK, lang).format(url=ack_url)])
    return title, body
