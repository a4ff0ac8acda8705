"""French and English: every label has a French translation in the catalog, and the pages show no other language.

The unit part reads the code (every literal passed to ``t(...)`` or marked ``N_(...)``, found by
app/i18n_extract.py, the extractor ``scripts/messages`` uses) and the editors' form labels, and checks each
against app/locale/fr/LC_MESSAGES/vigie.po. The browser part walks every page as an admin, in French and in
English, and reads the text a person sees, inside Panel's shadow roots too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    import param

    import app.dashboard.widgets  # noqa: F401  (registers the widget kinds)
    from app.alarms.rules import RULE_KINDS
    from app.dashboard.spec import WidgetSpec
    from app.pages.forms import FORM_LABELS

    shown = {cls.param[name].label for cls in [*WidgetSpec.kinds().values(), *RULE_KINDS.values()]
             for name in cls.keys() if name not in ("x", "y", "w", "h")}
    choices = {o for cls in [*WidgetSpec.kinds().values(), *RULE_KINDS.values()] for name in cls.keys()
               if not isinstance(cls.param[name], param.ListSelector)  # a table's columns: keys, as in the YAML
               for o in (getattr(cls.param[name], "objects", None) or []) if isinstance(o, str) and o.isalpha()}
    missing = sorted(label for label in shown | choices if not FRENCH.get(label))
    assert not missing, f"form labels or choices with no French translation (add them to app/pages/forms.py): {missing}"
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
    pybabel = str(Path(sys.executable).parent / "pybabel")
    if not Path(pybabel).exists():
        pybabel = shutil.which("pybabel") or pybabel
    out = tmp_path / "vigie.pot"
    subprocess.run([pybabel, "-q", "extract", "-F", str(ROOT / "babel.cfg"), "-k", "t", "-k", "N_", "--no-location",
                    "-o", str(out), "app/pages"], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pot = out.read_text(encoding="utf-8")
    assert 'msgid "My API tokens"' in pot and 'msgid "Overview"' in pot and 'msgid "Resume"' not in pot


def test_translations_keep_the_placeholders_of_their_english():
    def fields(text: str) -> set[str]:
        return set(re.findall(r"\{(\w*)\}", text))

    wrong = {msgid: msgstr for msgid, msgstr in FRENCH.items() if fields(msgid) != fields(msgstr)}
    assert not wrong, f"a translation drops or adds a {{placeholder}}: {wrong}"


def test_a_refusal_is_explained_in_the_pages_language_and_stays_english_for_the_api():
    from app.web.access import Forbidden, Identity, Role, explain

    refusal = Forbidden(Identity("ann", Role.viewer), "layouts:edit")
    assert str(refusal) == "ann may not: layouts:edit needs the analyst role"
    assert explain(refusal, "fr") == "ann n'y est pas autorisé : layouts:edit demande le rôle analyste"
    assert explain(ValueError("as it is"), "fr") == "as it is"


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


def test_saving_a_layout_keeps_its_titles_as_written(tmp_path):
    """The editor's save changes only what changed: ``title: {en: ..., fr: ...}`` stays a mapping."""
    import difflib

    import app.dashboard.widgets  # noqa: F401  (registers the widget kinds)
    from app.dashboard.layouts import LayoutStore

    original = (ROOT / "layouts" / "flood-dams.yaml").read_text(encoding="utf-8")
    (tmp_path / "flood-dams.yaml").write_text(original, encoding="utf-8")
    store = LayoutStore(tmp_path)
    spec = store.load("flood-dams").spec
    spec.widgets[2].x = 1  # a value tile moved
    store.save("flood-dams", spec)
    saved = (tmp_path / "flood-dams.yaml").read_text(encoding="utf-8")
    changed = [line for line in difflib.unified_diff(original.splitlines(), saved.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ["-  x: 0", "+  x: 1"], changed
    spec.title_fr = "Barrages"
    store.save("flood-dams", spec)
    assert "title: {en: Flood dams, fr: Barrages}" in (tmp_path / "flood-dams.yaml").read_text(encoding="utf-8")


def test_the_dynamic_labels_are_the_states_the_code_uses():
    from app.model import AlarmState
    from app.pages.alarms import STATE_LABEL

    assert set(STATE_LABEL) == set(AlarmState)
    assert all(FRENCH.get(label) for label in (*i18n.DYNAMIC_LABELS, *i18n.EVENT_LABELS.values()))


# -- the pages in a browser --------------------------------------------------------------------------------
# Words of the test's own data (user names are the role names; the /health keys of the System page) are not labels.
DATA_WORDS = {"admin", "analyst", "operator", "viewer"}


def _found(words: list[str], text: str, context: bool) -> list[str]:
    out = []
    for word in words:
        match = re.search(r"(?<![\w/.-])" + re.escape(word) + r"(?![\w/-])", text)
        if match:
            around = text[max(0, match.start() - 40):match.end() + 40].replace("\n", " | ")
            out.append(f"{word!r} in «{around}»" if context else word)
    return out


def english_left(text: str, context: bool = False) -> list[str]:
    """Return the English labels of the catalog that ``text`` (a French page) shows where French differs."""
    return _found([msgid for msgid, msgstr in FRENCH.items()
                   if msgstr != msgid and msgid not in DATA_WORDS and len(msgid) >= 2], text, context)


def french_left(text: str, context: bool = False) -> list[str]:
    """Return the French translations that ``text`` (an English page) shows."""
    return _found([msgstr for msgid, msgstr in FRENCH.items()
                   if msgstr != msgid and len(msgstr) >= 3 and msgstr not in FRENCH
                   and msgstr.lower() != msgid.lower()], text, context)


def test_english_left_and_french_left_find_whole_words_only():
    assert english_left("Alarmes · 3 alarmes · Heure") == []
    assert "Time" in english_left("Heure · Time") and "Save" in english_left("Enregistrer Save")
    assert english_left("dam-1/level admin Series-x") == []
    assert "Enregistrer" in french_left("Save Enregistrer") and french_left("Save · Alarms") == []


# What a person sees: text nodes of displayed elements, through every open shadow root (Panel renders each
# component into one), plus placeholders, the options of drop-downs and the document's title.
VISIBLE_TEXT_JS = """() => {
  const out = [document.title];
  const shown = (el) => {  // displayed, and not text moved off screen for screen readers (text-indent: -9999px)
    const s = getComputedStyle(el);
    return s.display !== 'none' && s.visibility !== 'hidden' && parseFloat(s.textIndent || '0') > -999;
  };
  const walk = (root) => {
    for (const node of root.childNodes) {
      if (node.nodeType === Node.TEXT_NODE) {
        if (node.textContent.trim()) out.push(node.textContent.trim());
        continue;
      }
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      const tag = node.tagName;
      if (tag === 'SCRIPT' || tag === 'STYLE' || tag === 'TEMPLATE' || tag === 'CODE') continue;
      if (tag !== 'OPTION' && !shown(node)) continue;
      if (node.placeholder) out.push(node.placeholder);
      if (node.shadowRoot) walk(node.shadowRoot);
      walk(node);
    }
  };
  walk(document.body);
  return out.join('\\n');
}"""

CONFIG = """alarms:
  rules:
    - {name: i18n flood, series: bt-2/level, above: 50, severity: critical}
    - {name: i18n watch, series: bt-1/level, above: 1000, severity: low, mode: shadow}
contacts:
  people:
    - {name: alice, language: fr, mail: alice@example.org, phone: "+33100000000"}
  teams:
    - {name: duty, members: [alice]}
  on_call:
    weekly:
      - {who: alice}
escalation:
  mail_url: "mailto://127.0.0.1:9?mode=insecure&from=vigie@example.org"
  policies:
    - name: main
      steps: [{whom: [alice], channels: [mail], wait_s: 600}]
"""

PAGES = ["/", "/dashboards", *(f"/dashboard?name={p.stem}" for p in sorted((ROOT / "layouts").glob("*.yaml"))),
         "/alarms", "/alarm-rules", "/history", "/system", "/access", "/contacts", "/login"]


@pytest.fixture(scope="module")
def site(tmp_path_factory, mosquitto):
    """One server with the demo's layouts, alarm rules, a contact and a policy, one live and one alarmed series."""
    from paho.mqtt import publish

    from tests.browser import VigieServer

    layouts = {p.stem: p.read_text(encoding="utf-8") for p in (ROOT / "layouts").glob("*.yaml")}
    server = VigieServer(tmp_path_factory.mktemp("vigie-i18n"), mosquitto.port, anonymous_read=False,
                         layouts=layouts, extra_config=CONFIG).start()
    for device, value in (("bt-1", 1234.5), ("bt-2", 99.0)):  # the second one raises "i18n flood"
        publish.single(f"bt/north/{device}/telemetry", json.dumps({"ts": int(time.time() * 1000), "level": value}),
                       qos=1, hostname=mosquitto.host, port=mosquitto.port)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def settled_texts(lanes: list[tuple[list, list[tuple[str, str]]]], deadline_s: float = 90.0) -> dict[str, str]:
    """Open the pages of each lane ((key, url) pairs, in order) in that lane's tabs, a free tab taking the next
    page, and return every page's visible text once it has settled: the same text three reads in a row, read
    0.7 s apart (Panel draws the page after the load event, over its websocket).

    Each tab keeps its own 0.7 s pace, so the pages settle side by side rather than one after the other, and a
    page with live figures (the System page) is read as often as when it was walked alone. Each page has
    ``deadline_s`` from its opening.
    """
    period = 0.7
    lanes = [(tabs, list(jobs)) for tabs, jobs in lanes]
    tabs = [(tab, jobs) for lane_tabs, jobs in lanes for tab in lane_tabs]  # each tab with its lane's queue
    texts: dict[str, str] = {}
    busy: dict[int, list] = {}  # tab index -> [key, url, previous text, steady reads, deadline, next read]

    def open_next() -> None:
        for i, (tab, jobs) in enumerate(tabs):
            if i not in busy and jobs:
                key, url = jobs.pop(0)
                tab.goto(url)
                now = time.monotonic()
                busy[i] = [key, url, None, 0, now + deadline_s, now]

    open_next()
    while busy:
        for i, job in list(busy.items()):
            key, url, previous, steady, end, next_read = job
            if time.monotonic() < next_read:
                continue
            tab = tabs[i][0]
            text = tab.evaluate(VISIBLE_TEXT_JS)
            ready = "/login" in url or ("Vigie" in text and tab.locator(".vigie-nav").count() > 0)
            if ready and text == previous and len(text) > 40:
                steady += 1
                if steady >= 2:
                    texts[key] = text
                    del busy[i]
                    continue
            else:
                steady = 0
            if time.monotonic() > end:
                raise AssertionError(f"{url} did not settle within {deadline_s:.0f} s; it showed:\n{text}")
            job[2:] = [text, steady, end, time.monotonic() + period]
        open_next()
        if busy:
            pause = min(job[5] for job in busy.values()) - time.monotonic()
            tabs[next(iter(busy))][0].wait_for_timeout(max(20, 1000 * pause))
    return texts


# The pages slowest to settle first (the overview's map, the System page's live figures), so that the
# walk ends with quick ones on every tab.
SLOW_FIRST = ["/", "/system"]


def walk(chromium, site, langs: tuple[str, ...] = ("fr", "en"), tabs_per_lang: int = 3) -> dict[str, dict[str, str]]:
    """Return, per language, the visible text of every page as an admin whose browser asks for that language.

    Each language has its own browser context (its locale, its login) with a few tabs; all the tabs of every
    language walk at the same time.
    """
    contexts, lanes = [], []
    order = SLOW_FIRST + [path for path in PAGES if path not in SLOW_FIRST]
    try:
        for lang in langs:
            context = chromium.new_context(locale="fr-FR" if lang == "fr" else "en-GB",
                                           viewport={"width": 1400, "height": 1000})
            contexts.append(context)
            site.login(context, "admin")
            lanes.append(([context.new_page() for _ in range(tabs_per_lang)],
                          [(f"{lang} {path}", site.base + path) for path in order]))
        texts = settled_texts(lanes)
    finally:
        for context in contexts:
            context.close()
    by_lang = {lang: {path: texts[f"{lang} {path}"] for path in PAGES} for lang in langs}
    if os.environ.get("VIGIE_I18N_DUMP"):  # a directory: each page's text, to read what no label check can catch
        out = Path(os.environ["VIGIE_I18N_DUMP"])
        out.mkdir(parents=True, exist_ok=True)
        for lang, pages in by_lang.items():
            for path, text in pages.items():
                (out / f"{lang}{re.sub(r'[^a-z0-9-]+', '_', path)}.txt").write_text(text, encoding="utf-8")
    return by_lang


@pytest.mark.browser
def test_every_page_in_french_shows_no_english_label_and_in_english_no_french_one(chromium, site):
    walked = walk(chromium, site)  # both languages side by side
    french = walked["fr"]
    left = {path: english_left(text, context=True) for path, text in french.items()}
    assert not any(left.values()), f"English labels left on French pages: { {p: w for p, w in left.items() if w} }"
    assert "Vue d'ensemble" in french["/alarms"] and "Barrages écrêteurs" in french["/dashboard?name=flood-dams"]
    english = walked["en"]
    left = {path: french_left(text, context=True) for path, text in english.items()}
    assert not any(left.values()), f"French labels on English pages: { {p: w for p, w in left.items() if w} }"
    assert "Overview" in english["/alarms"] and "Flood dams" in english["/dashboard?name=flood-dams"]
