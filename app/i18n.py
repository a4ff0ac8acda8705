"""French and English: translated labels, and numbers and dates formatted per language.

Operators of a French water directorate are a first audience, so every label
a page shows goes through :func:`t`. The language comes from the browser's
``Accept-Language`` (or a ``?lang=`` switch); anything but French is English.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

LANGUAGES = ("en", "fr")

_FR: dict[str, str] = {
    "Overview": "Vue d'ensemble",
    "Dashboards": "Tableaux de bord",
    "History": "Historique",
    "System": "Système",
    "Live series": "Séries en direct",
    "Series": "Série",
    "Device": "Équipement",
    "Metric": "Mesure",
    "Value": "Valeur",
    "Unit": "Unité",
    "Age": "Âge",
    "Quality": "Qualité",
    "Tags": "Étiquettes",
    "Status": "État",
    "Site": "Site",
    "Last reading": "Dernière mesure",
    "Worst alarm": "Alarme la plus grave",
    "no alarm": "aucune alarme",
    "(no site)": "(sans site)",
    "Edit": "Modifier",
    "Save": "Enregistrer",
    "Save as": "Enregistrer sous",
    "Delete": "Supprimer",
    "Undo": "Annuler",
    "Redo": "Rétablir",
    "Undo save": "Annuler l'enregistrement",
    "Redone": "Rétabli",
    "Nothing to redo": "Rien à rétablir",
    "Versions": "Versions",
    "Restore": "Restaurer",
    "Add widget": "Ajouter un widget",
    "Remove": "Retirer",
    "Pause": "Pause",
    "Resume": "Reprendre",
    "Window": "Fenêtre",
    "Export CSV": "Exporter en CSV",
    "Query": "Interroger",
    "Range": "Période",
    "Generate dashboard": "Générer un tableau de bord",
    "Ingest sources": "Sources d'acquisition",
    "Rejected inputs": "Entrées rejetées",
    "Store": "Stockage",
    "connected": "connecté",
    "disconnected": "déconnecté",
    "starting": "démarrage",
    "stopped": "arrêté",
    "good": "bonne",
    "uncertain": "incertaine",
    "bad": "mauvaise",
    "ok": "normal",
    "stale": "sans données",
    "Unknown series": "Série inconnue",
    "No data yet": "Pas encore de données",
    "readings/s": "mesures/s",
    "Language": "Langue",
    "Read-only server: editing is disabled": "Serveur en lecture seule : modification désactivée",
    "Log in": "Se connecter",
    "Access": "Accès",
    "Did you mean": "Vouliez-vous dire",
    "No data for": "Aucune donnée pour",
    "between": "entre le",
    "and": "et le",
    "Contacts": "Contacts",
    "Name": "Nom",
    "Phone": "Téléphone",
    "Teams": "Équipes",
    "Members": "Membres",
    "On call": "D'astreinte",
    "On call now": "D'astreinte maintenant",
    "nobody": "personne",
    "then": "ensuite",
    "Step": "Étape",
    "Whom": "Qui",
    "Now": "Maintenant",
    "Channels": "Canaux",
    "Wait": "Attente",
    "No escalation policy": "Aucune politique d'escalade",
    "Escalation policies": "Politiques d'escalade",
    "Send a test to step 1": "Envoyer un test à l'étape 1",
    "Test sent": "Test envoyé",
    "My API tokens": "Mes jetons d'API",
    "Users": "Utilisateurs",
    "Embed links": "Liens d'intégration",
    "Audit log": "Journal d'audit",
    "Create token": "Créer un jeton",
    "Create embed link": "Créer un lien d'intégration",
    "Revoke": "Révoquer",
    "Revoked": "Révoqué",
    "Add user": "Ajouter",
    "Added": "Ajouté",
    "Set role": "Changer le rôle",
    "Disable / enable": "Désactiver / réactiver",
    "What it is for": "À quoi il sert",
    "Token created": "Jeton créé",
    "Embed link created": "Lien d'intégration créé",
    "Embed link": "Lien d'intégration",
    "a year; revoke it on the Access page": "un an ; à révoquer sur la page Accès",
    "shown once: copy it now": "affiché une seule fois : copiez-le maintenant",
    "Label": "Libellé",
    "Expires": "Expire",
    "Role": "Rôle",
    "Log out": "Se déconnecter",
    "User name": "Nom d'utilisateur",
    "Password": "Mot de passe",
    "You are logged out.": "Vous êtes déconnecté.",
    "Your session has expired: please log in again.": "Votre session a expiré : reconnectez-vous.",
    "Too many failed attempts: wait {s} s and try again.": "Trop d'échecs : attendez {s} s puis réessayez.",
    "Wrong user name or password.": "Nom d'utilisateur ou mot de passe incorrect.",
    "viewer": "lecteur",
    "operator": "opérateur",
    "analyst": "analyste",
    "admin": "administrateur",
    "Saved": "Enregistré",
    "Click again within 5 s to delete": "Cliquez encore dans les 5 s pour supprimer",
    "deleted": "supprimé",
    "Undone": "Annulé",
    "Nothing to undo": "Rien à annuler",
    "Restored": "Restauré",
    "From": "Du",
    "To": "Au",
    "From must be before To": "Le début doit précéder la fin",
    "buckets of": "intervalles de",
    "source": "source",
    "type": "type",
    "state": "état",
    "total": "total",
    "last error": "dernière erreur",
    "time": "heure",
    "where": "où",
    "kind": "genre",
    "reason": "raison",
    "payload": "contenu",
    "ago": "",
    "Camera": "Caméra",
    "Active alarms": "Alarmes actives",
    "Map": "Carte",
    "bad quality": "qualité mauvaise",
    "warning": "avertissement",
    "alarm": "alarme",
    "No camera store configured": "Aucun stockage d'images configuré",
    "No image yet": "Pas encore d'image",
    "No alarm rules configured": "Aucune règle d'alarme configurée",
    "No active alarm": "Aucune alarme active",
    "Time": "Heure",
    "Severity": "Gravité",
    "Message": "Message",
    "State": "État",
    "low": "basse",
    "medium": "moyenne",
    "high": "haute",
    "critical": "critique",
    "Alarms": "Alarmes",
    "Unacknowledged": "Non acquittée",
    "Acknowledged": "Acquittée",
    "Returned, unacknowledged": "Revenue, non acquittée",
    "Shelved": "Mise en attente",
    "Suppressed": "Inhibée",
    "Out of service": "Hors service",
    "Normal": "Normale",
    "Since": "Depuis",
    "Present": "Présente",
    "Comment": "Commentaire",
    "Acknowledge": "Acquitter",
    "Shelve": "Mettre en attente",
    "Maintenance on/off": "Maintenance oui/non",
    "Maintenance on": "En maintenance",
    "Maintenance off": "Fin de maintenance",
    "Say why in the comment before shelving": "Indiquez la raison en commentaire avant la mise en attente",
    "Select one or more alarms first": "Sélectionnez d'abord une ou plusieurs alarmes",
    "Alarms per hour": "Alarmes par heure",
    "Busiest 10 minutes": "10 minutes les plus chargées",
    "Raised": "Déclenchées",
    "Most frequent rules": "Règles les plus fréquentes",
    "Chattering": "Alarmes papillotantes",
    "Stale": "Alarmes anciennes",
    "Alarm load (24 h)": "Charge d'alarmes (24 h)",
    "Journal": "Journal",
    "Escalations": "Escalades",
    "No escalation in progress": "Aucune escalade en cours",
    "Policy": "Politique",
    "Told": "Prévenus",
    "Next": "Ensuite",
    "step": "étape",
    "nobody on call": "personne d'astreinte",
    "quiet hours": "heures silencieuses",
    "none (last step done)": "rien (dernière étape faite)",
    "Event": "Événement",
    "Rule": "Règle",
    "By": "Par",
    "unacknowledged alarm": "alarme non acquittée",
    "unacknowledged alarms": "alarmes non acquittées",
    "raised": "déclenchée",
    "escalated": "aggravée",
    "cleared": "revenue à la normale",
    "acknowledged": "acquittée",
    "shelved": "mise en attente",
    "unshelved": "fin d'attente",
    "suppressed": "inhibée",
    "unsuppressed": "fin d'inhibition",
    "out_of_service": "hors service",
    "in_service": "en service",
    "Alarm rules": "Règles d'alarme",
    "Kind": "Type",
    "Series watched": "Séries surveillées",
    "This rule watches no series yet": "Cette règle ne surveille encore aucune série",
    "Click Delete again to delete the rule": "Cliquez encore sur Supprimer pour supprimer la règle",
    "Test on history": "Tester sur l'historique",
    "Replaying history…": "Rejeu de l'historique…",
    "still active": "toujours active",
    "alarms": "alarmes",
    "per day": "par jour",
    "readings": "mesures",
    "no series": "aucune série",
    "Duration": "Durée",
    "Sound": "Son",
    "Silent": "Muets",
    "unacknowledged": "non acquittées",
    "Shadow rules (what they would raise, never notified)":
        "Règles en observation (ce qu'elles déclencheraient, sans notification)",
    "silent devices": "équipements muets",
    "bad data": "données invalides",
    "not on the map": "absent de la carte",
    "Not on the map (no coordinates)": "Absents de la carte (sans coordonnées)",
    "Full screen": "Plein écran",
    "Log in first": "Connectez-vous d'abord",
    "Nothing to show: name layouts in the link (/wall?layouts=a,b) or in overview.wall_layouts":
        "Rien à afficher : nommez des tableaux dans le lien (/wall?layouts=a,b) ou dans overview.wall_layouts",
    "Generated from the site’s series: no layout names this site":
        "Généré à partir des séries du site : aucun tableau de bord ne nomme ce site",
}


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
    """Translate a label."""
    return _FR.get(text, text) if lang == "fr" else text


def fmt_number(value: float | None, lang: str, decimals: int = 2) -> str:
    """Format a number: ``1,234.5`` in English, ``1 234,5`` in French."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:,.{decimals}f}"
    if lang == "fr":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def fmt_time(time_ns: int, lang: str, tz: str = "UTC") -> str:
    """Format an instant: ``2026-11-25 14:03:07`` / ``25/11/2026 14:03:07``."""
    dt = datetime.fromtimestamp(time_ns / 1e9, tz=UTC).astimezone(ZoneInfo(tz))
    return dt.strftime("%d/%m/%Y %H:%M:%S" if lang == "fr" else "%Y-%m-%d %H:%M:%S")


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
