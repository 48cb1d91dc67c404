"""Keep secrets out of text: URLs with credentials, and values a message must not quote.

A NATS or Prometheus URL may carry ``user:password@``. Wherever such a URL could end up in a log line,
an error message, a status or a label, it goes through :func:`redact` first, which turns every
``scheme://user:pass@`` (or ``scheme://token@``) in a text into ``scheme://***@``.
"""

from __future__ import annotations

import re
from typing import Final

# scheme://<userinfo>@ — userinfo runs to the last "@" before the host (a password may hold an "@");
# it has no "/", "?", "#" or whitespace (RFC 3986), so an "@" in a path or query is left alone.
_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def without(text: str, *secrets: str | None) -> str:
    """``text`` with each (non-empty) secret value replaced by ``***``, and URLs redacted."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact(text)
