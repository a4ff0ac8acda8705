"""French and English: translated labels, and numbers and dates formatted per language.

Operators of a French water directorate are a first audience, so every label
a page shows goes through :func:`t`. The language comes from the browser's
``Accept-Language`` (or a ``?lang=`` switch); anything but French is English.

The translations are a gettext catalog, ``app/locale/<lang>/LC_MESSAGES/vigie.po``
(the English text is the msgid), edited with the usual tools (Poedit, Weblate,
``pybabel``); ``scripts/messages`` finds new labels in the code and adds them
to it (see README, "Languages").
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

LANGUAGES = ("en", "fr")


def N_(text: str) -> str:
    """Mark a label for the message catalog without translating it (a table of labels translated later).

    ``pybabel extract`` finds the literals passed to :func:`t` and to ``N_``; a label that reaches
    :func:`t` only through a variable (a state, a role, a column name from a table) must be marked
    with ``N_`` where it is written, or the catalog's update would drop it.
    """
    return text


LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "vigie"


def load_catalog(lang: str, locale_dir: Path = LOCALE_DIR) -> dict[str, str]:
    """Return the translations of ``locale/<lang>/LC_MESSAGES/vigie.po``: msgid -> msgstr.

    Read with Babel when the module is imported (tens of milliseconds): nothing to compile at build
    time, so a fresh ``pip install -e .`` and a checkout run the same catalog translators edit.
    Untranslated (empty) and fuzzy entries are left out, as gettext does: the English shows.
    """
    from babel.messages.pofile import read_po

    path = locale_dir / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return {}
    with path.open("rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    return {m.id: m.string for m in catalog
            if m.id and isinstance(m.id, str) and isinstance(m.string, str) and m.string and not m.fuzzy}


_CATALOGS: dict[str, dict[str, str]] = {lang: load_catalog(lang) for lang in LANGUAGES if lang != "en"}

# Labels that reach t() only through variables: kept in the catalog by these marks (see N_).
DYNAMIC_LABELS = (
    # ingest source states (app/ingest), shown on the System page
    N_("connected"), N_("disconnected"), N_("starting"), N_("stopped"),
    # reading qualities and value states (app/model.py)
    N_("good"), N_("uncertain"), N_("bad"), N_("ok"), N_("stale"),
    # roles (app/web/access.py)
    N_("viewer"), N_("operator"), N_("analyst"), N_("admin"),
    # alarm severities and journal events (app/alarms)
    N_("low"), N_("medium"), N_("high"), N_("critical"),
    N_("raised"), N_("escalated"), N_("cleared"), N_("acknowledged"), N_("shelved"), N_("unshelved"),
    N_("suppressed"), N_("unsuppressed"), N_("out_of_service"), N_("in_service"),
)

# The journal's other events (audit log, escalations), as the pages name them; the alarm events above are their
# own label. The kinds themselves stay in the journal, the API and the CSV export.
EVENT_LABELS = {
    "login": N_("logged in"), "login_failed": N_("login failed"), "login_refused": N_("login refused"),
    "logout": N_("logged out"), "token_created": N_("token created"), "token_revoked": N_("token revoked"),
    "user_added": N_("user added"), "user_changed": N_("user changed"), "user_deleted": N_("user deleted"),
    "embed_created": N_("embed link created"), "embed_revoked": N_("embed link revoked"),
    "layout_saved": N_("layout saved"), "layout_generated": N_("layout generated"),
    "layout_undone": N_("layout save undone"), "layout_restored": N_("layout restored"),
    "layout_deleted": N_("layout deleted"), "rule_added": N_("rule added"), "rule_saved": N_("rule saved"),
    "rule_deleted": N_("rule deleted"), "escalation_stopped": N_("escalation stopped"),
    "ack_link_used": N_("acknowledged from a message"), "maintenance_on": N_("Maintenance on"),
    "maintenance_off": N_("Maintenance off"),
}


def event_label(kind: str, lang: str) -> str:
    """Return a journal event's label in ``lang``: English shows the kind itself (as the API and the CSV name it)."""
    return kind if lang == "en" else t(EVENT_LABELS.get(kind, kind), lang)


def negotiate(accept_language: str | None, override: str | None = None) -> str:
    """Return ``fr`` or ``en`` from a ``?lang=`` override or an Accept-Language header."""
    if override in LANGUAGES:
        return override  # type: ignore[return-value]
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        lang, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        code = lang.split("-")[0].lower()
        if code in LANGUAGES and weight > best_q:
            best, best_q = code, weight
    return best


def t(text: str, lang: str) -> str:
    """Translate a label (English is the msgid): its translation in ``lang``'s catalog, else the English."""
    catalog = _CATALOGS.get(lang)
    return catalog.get(text, text) if catalog else text


def tabulator_locale(lang: str) -> dict:
    """Return a Tabulator ``configuration`` that words its pagination in ``lang`` (English: Tabulator's own)."""
    if lang == "en":
        return {}
    words = {"first": t("First", lang), "first_title": t("First page", lang), "prev": t("Previous", lang),
             "prev_title": t("Previous page", lang), "next": t("Next page", lang), "next_title": t("Next page", lang),
             "last": t("Last", lang), "last_title": t("Last page", lang), "page_size": t("Page size", lang),
             "all": t("All", lang)}
    return {"locale": lang, "langs": {lang: {"pagination": words}}}


def fmt_number(value: float | None, lang: str, decimals: int = 2) -> str:
    """Format a number: ``1,234.5`` in English, ``1 234,5`` in French."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:,.{decimals}f}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def fmt_decimal(value: float | None, lang: str, max_decimals: int = 4) -> str:
    """Format a number with as many decimals as it has (up to ``max_decimals``): ``1,234.5`` / ``1 234,5``.

    Babel's CLDR patterns: slower than :func:`fmt_number` (tens of microseconds), so for tables an admin opens,
    not for the tiles every session refreshes.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    from babel.numbers import format_decimal

    return format_decimal(value, format="#,##0." + "#" * max_decimals, locale=_LOCALES.get(lang, "en_GB"))


_LOCALES = {"en": "en_GB", "fr": "fr_FR"}


def fmt_time(time_ns: int, lang: str, tz: str = "UTC", millis: bool = False) -> str:
    """Format an instant in the zone ``tz``: ``2026-11-25 14:03:07`` / ``25/11/2026 14:03:07`` (+ ``.123`` millis)."""
    dt = datetime.fromtimestamp(time_ns / 1e9, tz=UTC).astimezone(ZoneInfo(tz))
    text = dt.strftime("%d/%m/%Y %H:%M:%S" if lang == "fr" else "%Y-%m-%d %H:%M:%S")
    return f"{text}{',' if lang == 'fr' else '.'}{dt.microsecond // 1000:03d}" if millis else text


_UNITS_FR = {"d": "j", "y": "a"}  # day, year: jour, an (s, min, h are the same)


def fmt_span(text: str, lang: str) -> str:
    """Return a span label (``7 d``, ``1y``, ``15 min``) with its unit in ``lang``: ``7 j``, ``1a``."""
    if lang != "fr":
        return text
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    return number + _UNITS_FR.get(unit, unit)


def fmt_age(seconds: float, lang: str) -> str:
    """Format an age coarsely: ``< 10 s``, ``20 s``, ``3 min``, ``2 h``, ``4 d`` (``j`` in French).

    Coarse on purpose: a label that changes every second makes every open
    session re-send its tiles every second (the dominant cost with 50
    sessions in bench/sessions.py), and ten seconds is fine enough to see
    that data stopped.
    """
    if seconds < 10:
        return "< 10 s"
    if seconds < 60:
        return f"{int(seconds // 10) * 10} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} {'j' if lang == 'fr' else 'd'}"
