"""French and English: every label has a French translation in the catalog, and the pages show no other language.

The unit part reads the code (every literal passed to ``t(...)`` or marked ``N_(...)``, found by
app/i18n_extract.py, the extractor ``scripts/messages`` uses) and the editors' form labels, and checks each
against app/locale/fr/LC_MESSAGES/vigie.po. The browser part walks every page as an admin, in French and in
English, and reads the text a person sees, inside Panel's shadow roots too.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from app import i18n
from app.i18n import N_, fmt_number, fmt_span, fmt_time, load_catalog, t
from app.i18n_extract import labels_in_code, labels_in_tree

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"
FRENCH = load_catalog("fr")


# -- the catalog -------------------------------------------------------------------------------------------
def test_every_label_in_the_code_has_a_french_translation():
    found = labels_in_tree(APP)
    assert len(found) > 250, "the extractor found too few labels: is it still reading the pages?"
    missing = {text: where[:3] for text, where in found.items() if not FRENCH.get(text)}
    assert not missing, ("labels with no French translation in app/locale/fr/LC_MESSAGES/vigie.po (run "
                         f"./scripts/messages, then translate them): {missing}")


def test_every_form_label_of_the_editors_has_a_french_translation():
    """pn.Param labels the fields from the param names: each widget kind's and rule kind's, in the catalog."""
    import app.dashboard.widgets  # noqa: F401  (registers the widget kinds)
    from app.alarms.rules import RULE_KINDS
    from app.dashboard.spec import WidgetSpec
    from app.pages.forms import FORM_LABELS

    shown = {cls.param[name].label for cls in [*WidgetSpec.kinds().values(), *RULE_KINDS.values()]
             for name in cls.keys() if name not in ("x", "y", "w", "h")}
    missing = sorted(label for label in shown if not FRENCH.get(label))
    assert not missing, f"form labels with no French translation (add them to app/pages/forms.py): {missing}"
    assert not sorted(set(shown) - set(FORM_LABELS) - set(labels_in_tree(APP))), "labels missing from FORM_LABELS"


def test_the_extractor_reads_calls_inside_f_strings_and_both_branches_of_a_choice():
    code = ("x = f\"## {t('Alarms', lang)}\"\nv = t('A' if p else 'B', lang)\ny = N_('marked')\nz = t(name, lang)\n"
            "w = other('not a label')\n")
    assert [text for _line, _f, text in labels_in_code(code)] == ["Alarms", "A", "B", "marked"]


def test_the_catalog_is_a_po_file_translators_open_and_the_old_api_holds():
    po = (APP / "locale" / "fr" / "LC_MESSAGES" / "vigie.po").read_text(encoding="utf-8")
    assert 'msgid "Overview"\nmsgstr "Vue d\'ensemble"' in po and '"Language: fr\\n"' in po
    assert t("Overview", "fr") == "Vue d'ensemble" and t("Overview", "en") == "Overview"
    assert t("a label nobody translated", "fr") == "a label nobody translated"  # English rather than nothing
    assert N_("Overview") == "Overview"
    assert (ROOT / "babel.cfg").exists() and (ROOT / "scripts" / "messages").exists()


def test_untranslated_and_fuzzy_entries_show_the_english(tmp_path):
    po = tmp_path / "de" / "LC_MESSAGES"
    po.mkdir(parents=True)
    (po / "vigie.po").write_text('msgid ""\nmsgstr "Language: de\\n"\n\nmsgid "Save"\nmsgstr "Speichern"\n\n'
                                 'msgid "Undo"\nmsgstr ""\n\n#, fuzzy\nmsgid "Delete"\nmsgstr "Löschen?"\n',
                                 encoding="utf-8")
    assert load_catalog("de", tmp_path) == {"Save": "Speichern"}
    assert load_catalog("xx", tmp_path) == {}


def test_pybabel_extract_with_the_projects_config_finds_the_labels(tmp_path):
    """``scripts/messages``' extraction: Babel with babel.cfg and the AST extractor, on the real code."""
    pybabel = shutil.which("pybabel") or str(Path(__import__("sys").executable).parent / "pybabel")
    import os
    import subprocess

    out = tmp_path / "vigie.pot"
    subprocess.run([pybabel, "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "t", "-k", "N_", "--no-location",
                    "-o", str(out), "app/pages"], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pot = out.read_text(encoding="utf-8")
    assert 'msgid "My API tokens"' in pot and 'msgid "Overview"' in pot and 'msgid "Resume"' not in pot


# -- numbers, dates, spans ---------------------------------------------------------------------------------
def test_numbers_follow_the_language_as_babel_formats_them():
    from babel.numbers import format_decimal

    for value in (1234.5, -98765.4321, 0.0, 12.0, 1e9):
        for lang, locale in (("en", "en_GB"), ("fr", "fr_FR")):
            assert fmt_number(value, lang, 2) == format_decimal(value, format="#,##0.00", locale=locale)
    assert fmt_number(None, "fr") == "–"


def test_times_are_in_the_servers_zone_and_the_languages_order():
    ns = 1_764_590_400 * 10**9  # 2025-12-01 12:00:00 UTC
    assert fmt_time(ns, "en", "UTC") == "2025-12-01 12:00:00"
    assert fmt_time(ns, "fr", "Europe/Paris") == "01/12/2025 13:00:00"
    assert fmt_time(ns + 5 * 10**6, "fr", "Europe/Paris", millis=True) == "01/12/2025 13:00:00,005"
    assert fmt_span("7 d", "fr") == "7 j" and fmt_span("1y", "fr") == "1a" and fmt_span("15 min", "fr") == "15 min"
    assert fmt_span("7 d", "en") == "7 d"


def test_layout_titles_per_language_and_old_layouts_stay_valid():
    import app.dashboard.widgets  # noqa: F401  (registers the widget kinds)
    from app.dashboard.spec import parse_layout, title_in

    both = parse_layout("x", "title: {en: Flood dams, fr: Barrages}\nwidgets:\n"
                        "- {type: markdown, id: m, title: {en: Procedure, fr: Procédure}, text: hi}\n")
    assert not both.problems
    assert title_in(both.spec, "fr") == "Barrages" and title_in(both.spec, "en") == "Flood dams"
    assert title_in(both.spec.widgets[0], "fr") == "Procédure"
    assert both.spec.to_spec()["title_fr"] == "Barrages"  # saved flat, as the editor writes it
    old = parse_layout("y", "title: Servers\nwidgets:\n- {type: markdown, id: m, title: CPU, text: hi}\n")
    assert not old.problems and title_in(old.spec, "fr") == "Servers" and title_in(old.spec.widgets[0], "fr") == "CPU"
    for path in sorted((ROOT / "layouts").glob("*.yaml")):  # the demo's layouts: valid, and titled in French
        loaded = parse_layout(path.stem, path.read_text(encoding="utf-8"))
        assert not loaded.problems, loaded.problems
        assert loaded.spec.title_fr and all(w.title_fr for w in loaded.spec.widgets if w.title), path


def test_the_dynamic_labels_are_the_states_the_code_uses():
    from app.model import AlarmState
    from app.pages.alarms import STATE_LABEL

    assert set(STATE_LABEL) == set(AlarmState)
    assert all(FRENCH.get(label) for label in (*i18n.DYNAMIC_LABELS, *i18n.EVENT_LABELS.values()))


# -- the pages in a browser --------------------------------------------------------------------------------
# Words of the test's own data (user names are the role names; the /health keys of the System page) are not labels.
DATA_WORDS = {"admin", "analyst", "operator", "viewer"}


def english_left(text: str) -> list[str]:
    """Return the English labels of the catalog that ``text`` (a French page) shows where French differs."""
    out = []
    for msgid, msgstr in FRENCH.items():
        if msgstr == msgid or msgid in DATA_WORDS or len(msgid) < 2:
            continue
        if re.search(r"(?<![\w/.-])" + re.escape(msgid) + r"(?![\w/-])", text):
            out.append(msgid)
    return out


def french_left(text: str) -> list[str]:
    """Return the French translations that ``text`` (an English page) shows."""
    out = []
    for msgid, msgstr in FRENCH.items():
        if msgstr == msgid or len(msgstr) < 3 or msgstr in FRENCH.keys() or msgstr.lower() == msgid.lower():
            continue
        if re.search(r"(?<![\w/.-])" + re.escape(msgstr) + r"(?![\w/-])", text):
            out.append(msgstr)
    return out


def test_english_left_and_french_left_find_whole_words_only():
    assert english_left("Alarmes · 3 alarmes · Heure") == []
    assert "Time" in english_left("Heure · Time") and "Save" in english_left("Enregistrer Save")
    assert english_left("dam-1/level admin Series-x") == []
    assert "Enregistrer" in french_left("Save Enregistrer") and french_left("Save · Alarms") == []
