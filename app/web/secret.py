"""The server's signing secret: session cookies, Bokeh session tokens, embed and acknowledgement links.

It comes from the environment (the variable ``server.secret_env`` names).
Without one, a random secret is made once and kept in ``var/secret.key``
under the data root (mode 0600): embed links given to a portal and
acknowledgement links already mailed must survive a restart, and a secret
that lives only in memory would break them all. The value is never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from app.config import LoadedConfig

log = logging.getLogger(__name__)

MIN_BYTES = 32  # Bokeh refuses shorter secret keys for signed sessions


def server_secret(loaded: LoadedConfig, base: Path) -> bytes:
    """Return the signing secret: the environment's, else the one kept under ``base`` (made on first use)."""
    env_name = loaded.config.server.secret_env
    text = loaded.secret(env_name)
    if text:
        if len(text.encode()) < MIN_BYTES:
            raise ValueError(f"the secret in ${env_name} is {len(text.encode())} bytes; it needs {MIN_BYTES} or more "
                             "(python -c 'import secrets; print(secrets.token_urlsafe(48))')")
        return text.encode()
    path = base / "var" / "secret.key"
    try:
        value = path.read_text().strip()
        if len(value) >= MIN_BYTES:
            return value.encode()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log.warning("server.secret_env is not set: made a signing secret in %s (keep it private; set server.secret_env "
                "to manage it yourself)", path)
    return value.encode()
