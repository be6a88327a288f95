"""HTTP GET for the metrics adapters, behind a ``Fetch`` callable so tests inject fakes instead
of patching the stdlib."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Protocol

FETCH_ERRORS = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError)


class Fetch(Protocol):
    def __call__(self, url: str, timeout_s: float) -> str: ...


def http_get_text(url: str, timeout_s: float) -> str:
    """GET ``url`` and return its body as text; raises OSError/HTTPException on failure."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our own endpoints)
        body: bytes = response.read()
    return body.decode("utf-8", errors="replace")
