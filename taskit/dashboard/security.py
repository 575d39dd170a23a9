"""The dashboard's guards: auth, CSRF tokens, safe headers, and which hosts count as local.

* Auth: basic auth (a user and password), or a token sent as `Authorization: Bearer TOKEN`
  (a browser can send the token as the basic-auth password, with any user name).
* CSRF: every change is a POST carrying a form field equal to a random cookie that only
  this site's pages can read (double submit; the cookie is SameSite=Strict and HttpOnly),
  sent by a page of this very origin when the browser says where it comes from
  (Sec-Fetch-Site): cookies are not kept apart by port, and a sibling subdomain can set
  them, so a page at 127.0.0.1:8000 could plant the cookie and post the same value.
  What can be checked without the body (where the POST comes from, the cookie, the body's
  type and size) is checked before it is read, and the body is read only up to
  MAX_FORM_BYTES: a cross-site upload is refused unread, not spooled to disk first.
* Headers: a Content-Security-Policy that allows no inline script or style, no framing.
* Without auth on a loopback address, only requests for localhost or a loopback address
  (127.0.0.1, [::1]) are served, so a web page cannot reach the dashboard by pointing its
  own name at 127.0.0.1 (DNS rebinding).
* The one-line message shown after a change (the flash) rides to the next page in a cookie
  signed with a key made when the app is, and lives a minute: a page on another port could
  otherwise plant any text there for the dashboard to show.
* Redirects are relative ('/workers'): Starlette builds the one that adds or drops a
  trailing slash from the Host header, which the client chooses ('http://evil.com/workers').
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
import time
import urllib.parse
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

CSRF_COOKIE = "taskit_csrf"
CSRF_FIELD = "csrf"
CSRF_REFUSED = "missing or wrong CSRF token: reload the page and try again"
#: Sec-Fetch-Site values of a POST that may change something: from our own pages (or typed)
OWN_ORIGIN = ("same-origin", "none")
#: how the dashboard's own forms are posted, and the most one weighs (a token, a page name)
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 4096
FORM_TOO_BIG = f"refused: a change is a form of at most {MAX_FORM_BYTES} bytes"

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def is_local_host(header: str) -> bool:
    """Whether a Host header ('localhost:9181', '127.0.0.1', '[::1]:9181') names this machine."""
    host = header.strip()
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]
    return is_loopback(host)


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: auth (when configured), the local-host check, and the safe headers."""

    def __init__(
        self, app: Any, *, username: str | None, password: str | None, token: str | None, local_only: bool
    ) -> None:
        self.app, self.username, self.password, self.token = app, username, password, token
        self.local_only = local_only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, relative(v) if k.lower() == b"location" else v) for k, v in message.get("headers", [])]
                message["headers"] = headers + [(k.encode(), v.encode()) for k, v in HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, headers: Headers) -> Response | None:
        if self.local_only and not is_local_host(headers.get("host", "")):
            return PlainTextResponse(
                "this dashboard answers only to localhost or a loopback address", 421, headers=HEADERS
            )
        if (self.password or self.token) and not self._authorized(headers.get("authorization", "")):
            return PlainTextResponse(
                "authentication required", 401, headers={"www-authenticate": 'Basic realm="taskit", charset="UTF-8"', **HEADERS}
            )
        return None

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return _same(credentials.strip(), self.token)
        if scheme != "basic":
            return False
        try:
            user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if self.token and _same(password, self.token):
            return True
        return bool(self.password) and _same(user, self.username or "") & _same(password, self.password or "")


def relative(location: bytes) -> bytes:
    """A redirect's target without scheme and host: 'http://evil.com/workers' -> '/workers'.
    Never '//host/...', which a browser reads as another site."""
    parts = urllib.parse.urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc and not parts.path.startswith("//"):
        return location
    path = "/" + parts.path.lstrip("/")
    return urllib.parse.urlunsplit(("", "", path, parts.query, parts.fragment)).encode("latin-1")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def csrf_token(request: Request) -> tuple[str, bool]:
    """(the token for this browser's forms, whether it is new and must be set as a cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) == 43:
        return token, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
        path=(request.scope.get("root_path") or "") + "/",
    )


class Flash:
    """Sign and check the flash cookie's value: '<time>:<message>' in base64, a dot, its HMAC.
    A value this app did not sign, or signed more than FLASH_SECONDS ago, reads as no message."""

    SECONDS = 60  # the page it is for is loaded at once, by the redirect that sets it
    MAX_LENGTH = 500

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)  # per app: a restart drops a message in flight, no more

    def pack(self, message: str, now: float | None = None) -> str:
        payload = f"{int(time.time() if now is None else now)}:{message[:self.MAX_LENGTH]}".encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def unpack(self, value: str, now: float | None = None) -> str:
        body, _, mac = value.partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            return ""
        if not hmac.compare_digest(given, self._mac(payload)):
            return ""
        stamp, _, message = payload.partition(b":")
        now = time.time() if now is None else now
        if not stamp.isdigit() or not 0 <= now - int(stamp) <= self.SECONDS:
            return ""
        return message.decode(errors="replace")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, "sha256").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")  # '=' would make the cookie quoted


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def post_refusal(request: Request) -> Response | None:
    """Why a POST is refused before its body is read, or None: one from another site's page,
    without our CSRF cookie, or whose body is not a small urlencoded form (Starlette would
    spool a multipart upload to disk to parse it)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in OWN_ORIGIN:
        return PlainTextResponse("refused: this change was posted by another site's page", 403)
    if len(request.cookies.get(CSRF_COOKIE, "")) != 43:
        return PlainTextResponse(CSRF_REFUSED, 403)
    if request.headers.get("content-type", "").partition(";")[0].strip().lower() != FORM_TYPE:
        return PlainTextResponse(f"refused: a change is posted as {FORM_TYPE}, as the dashboard's forms do", 415)
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        return PlainTextResponse(FORM_TOO_BIG, 413)
    return None


async def read_form(request: Request) -> dict[str, str] | None:
    """The fields of a urlencoded form (the first value of each), read only up to
    MAX_FORM_BYTES: None when the body is bigger (a chunked body declares no length)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(body.decode("latin-1"), keep_blank_values=True):
        fields.setdefault(name, value)
    return fields


def csrf_ok(request: Request, form_token: object) -> bool:
    """Whether a POST's form carries the token of this browser's cookie (see post_refusal for
    what is checked before the form is read)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return isinstance(form_token, str) and len(cookie) == 43 and _same(form_token, cookie)
