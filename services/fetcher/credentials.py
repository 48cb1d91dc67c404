"""How the Prometheus backend authenticates and verifies: bearer token (fixed or from a file) and TLS.

One rule for a token, wherever it comes from (``WVA_PROMETHEUS_TOKEN`` or the file): surrounding
whitespace is stripped — ``kubectl create secret --from-file`` usually leaves a trailing newline — and
what remains must be one non-empty run of printable ASCII without spaces, which is what an HTTP header
value can carry. Anything else is refused with a message that names the setting, never the token.

``WVA_PROMETHEUS_TOKEN_FILE`` names a file that holds the token, typically a projected service-account
token that the kubelet rotates (it swaps a symlink, so the file's identity changes). The file is read
at start-up — missing, unreadable or empty is a :class:`TokenFileError` naming the setting — and read
again before a request whenever its ``stat`` changed (or once a minute regardless). If a later re-read
fails the last good token is kept and a warning logged: Prometheus answering 401 says the rest.

TLS is verified by default, against ``WVA_PROMETHEUS_CA`` when set, else the system's trust store;
only ``WVA_PROMETHEUS_INSECURE_SKIP_VERIFY=true`` turns verification off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Final

import requests

log = logging.getLogger("wva.fetcher.credentials")

TOKEN_SETTING: Final = "WVA_PROMETHEUS_TOKEN"
TOKEN_FILE_SETTING: Final = "WVA_PROMETHEUS_TOKEN_FILE"
MAX_AGE: Final = 60.0  # seconds after which the file is read again even if its stat looks the same


class TokenError(ValueError):
    """A token that cannot be sent; the message says why without quoting it."""


class TokenFileError(Exception):
    """The token file cannot be used; the message names the setting and the path."""


def clean_token(raw: str) -> str:
    """The token without surrounding whitespace; :class:`TokenError` unless it can go in a header."""
    token = raw.strip()
    if not token:
        raise TokenError("the token is empty")
    if any(c in token for c in "\r\n"):
        raise TokenError("the token spans several lines")
    if not all("!" <= c <= "~" for c in token):
        raise TokenError("the token holds a space, a control character or a non-ASCII character")
    return token


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            raw = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise TokenFileError(f"{TOKEN_FILE_SETTING}={path!r}: cannot read the bearer token: {reason}") from None
    try:
        return clean_token(raw)
    except TokenError as exc:
        raise TokenFileError(f"{TOKEN_FILE_SETTING}={path!r}: {exc}") from None


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class TokenFile:
    """The current token of a file; thread-safe (queries run in an executor)."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self.reloads = 0
        self._failing = False
        st = self._stat_or_raise()
        self._token = read_token(path)
        self._stamp = _stamp(st)
        self._read_at = clock()

    def _stat_or_raise(self) -> os.stat_result:
        try:
            return os.stat(self.path)
        except OSError as exc:
            raise TokenFileError(
                f"{TOKEN_FILE_SETTING}={self.path!r}: cannot read the bearer token: {exc.strerror or exc}"
            ) from None

    def token(self) -> str:
        with self._lock:
            try:
                stamp = _stamp(self._stat_or_raise())
                if stamp != self._stamp or self._clock() - self._read_at >= MAX_AGE:
                    token = read_token(self.path)
                    if token != self._token:
                        self.reloads += 1
                        log.info("Prometheus bearer token re-read", extra={"path": self.path})
                    self._token, self._stamp, self._read_at = token, stamp, self._clock()
                self._failing = False
            except TokenFileError as exc:
                if not self._failing:
                    log.warning("%s; keeping the last token", exc)
                self._failing = True
            return self._token


class BearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer …`` on every request, asking ``token`` each time."""

    def __init__(self, token: Callable[[], str]) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token()}"
        return request


def bearer_auth(*, token: str | None, token_file: str | None) -> BearerAuth | None:
    """The auth for the settings (:class:`TokenFileError` for an unusable file, :class:`TokenError` for
    an unusable fixed token — settings validation refuses both before a service starts)."""
    if token_file:
        return BearerAuth(TokenFile(token_file).token)
    if token:
        fixed = clean_token(token)
        return BearerAuth(lambda: fixed)
    return None


def verify(*, ca: str | None, insecure: bool) -> bool | str:
    """``requests``' ``verify``: False only when asked; a CA bundle when given; else the system store."""
    if insecure:
        return False
    return ca or True
