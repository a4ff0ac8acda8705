"""A token given in a URL never reaches the log, whichever Tornado logger writes the line.

The access log masked ``p=`` (InfluxDB 1.x clients send the ingest token so);
Tornado's uncaught-exception line (``tornado.application``) printed the
request, URI and token included.
"""

from __future__ import annotations

import logging

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.log import app_log, gen_log

from app.web import redact

SECRET = "vgt_s3cr3t-Token_value"


def test_tornado_error_lines_mask_the_token(caplog):
    redact.install()
    request = HTTPServerRequest(method="POST", uri=f"/write?db=telegraf&u=telegraf&p={SECRET}&precision=s",
                                headers=HTTPHeaders({"Host": "127.0.0.1"}))
    with caplog.at_level(logging.INFO):
        # What RequestHandler.log_exception and send_error write, in Tornado's own words.
        app_log.error("Uncaught exception %s\n%r", f"POST {request.uri} (127.0.0.1)", request)
        gen_log.warning("%d %s: %s", 400, f"POST {request.uri} (127.0.0.1)", "bad line")
    assert SECRET not in caplog.text
    assert caplog.text.count("p=***&precision=s") == 3  # the summary, the request's URI, the warning
    assert "db=telegraf&u=telegraf" in caplog.text  # the rest of the line is kept


def test_redact_masks_only_secret_arguments():
    assert redact.redact("/write?db=x&p=abc&u=me") == "/write?db=x&p=***&u=me"
    assert redact.redact("/api?token=abc") == "/api?token=***"
    assert redact.redact("/history?series=dam-1/p&points=10") == "/history?series=dam-1/p&points=10"
