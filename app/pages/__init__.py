"""The Panel pages.

Each view takes the platform's page services (:mod:`app.pages.services`) and the
web auth explicitly: never the runtime, never a global.
"""
