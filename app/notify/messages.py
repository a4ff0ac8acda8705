"""What a notification says: what, where, how bad, since when, in the recipient's language."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SEVERITY_WORDS = {
    "fr": {"low": "faible", "medium": "moyenne", "high": "haute", "critical": "critique"},
    "en": {"low": "low", "medium": "medium", "high": "high", "critical": "critical"},
}
TEXTS = {
    "fr": {"title": "Vigie : {n} alarme(s) {where}", "line": "- {device} {metric} = {value}{unit} (limite {limit}), "
           "gravité {severity}, depuis {since} : {message}", "ack": "Acquitter (arrête l'escalade) : {url}",
           "step": "Étape {step} de la politique {policy}.", "test": "[TEST] "},
    "en": {"title": "Vigie: {n} alarm(s) {where}", "line": "- {device} {metric} = {value}{unit} (limit {limit}), "
           "severity {severity}, since {since}: {message}", "ack": "Acknowledge (stops the escalation): {url}",
           "step": "Step {step} of policy {policy}.", "test": "[TEST] "},
}


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
    t = TEXTS.get(lang, TEXTS["en"])
    sites = sorted({a.site for a in alarms if a.site})
    where = "@ " + ", ".join(sites) if sites else "@ " + ", ".join(sorted({a.device for a in alarms}))
    title = (t["test"] if test else "") + t["title"].format(n=len(alarms), where=where)
    lines = []
    for a in alarms:
        since = datetime.fromtimestamp(a.since_ns / 1e9, UTC).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        lines.append(t["line"].format(device=a.device, metric=a.metric, value=_num(a.value),
                                      unit=f" {a.unit}" if a.unit else "", limit=_num(a.limit),
                                      severity=SEVERITY_WORDS.get(lang, SEVERITY_WORDS["en"]).get(a.severity,
                                                                                                   a.severity),
                                      since=since, message=a.message))
    body = "\n".join([title, *lines, t["step"].format(step=step + 1, policy=policy), t["ack"].format(url=ack_url)])
    return title, body
