"""Secrets that clients put in URLs stay out of Vigie's logs, whoever writes the line.

InfluxDB 1.x clients (Telegraf, influxdb-python) may send the ingest token as
the ``p`` query argument of ``/write``. Vigie's access log masked it, but
Tornado's own lines did not: an uncaught exception logs the request's URI
(``tornado.application``), and an HTTP error's warning its summary
(``tornado.general``). One filter on the three Tornado loggers masks the
argument in every line they write, so no handler needs to remember it.
"""

from __future__ import annotations

import logging
import re

_SECRET_ARG = re.compile(r"([?&](?:p|password|token)=)[^&\s'\"]*")
LOGGERS = ("tornado.access", "tornado.application", "tornado.general")


def redact(text: str) -> str:
    """Return ``text`` with the values of secret-bearing query arguments replaced by ``***``."""
    return _SECRET_ARG.sub(r"\1***", text) if "=" in text else text


class QuerySecretFilter(logging.Filter):
    """Rewrite a record's message with its query secrets masked (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = QuerySecretFilter()


def install() -> None:
    """Put the filter on Tornado's loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
