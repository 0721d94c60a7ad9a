"""Sign-in providers for tests/test_oauth.py, on real sockets: a GitHub-shaped
OAuth 2 server (authorize → code → token → /user and /user/emails, PKCE S256
checked) and a small OpenID Connect provider whose tokens can be made wrong
on purpose (audience, expiry, missing claims, alg none or HS256 keyed with the
client secret), signed for real (RS256, joserfc). The main
OpenID flows run against oidc-provider-mock; this one covers what that
provider cannot be asked to get wrong."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

CLIENT_ID = "observe-test-client"
CLIENT_SECRET = "observe-test-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def s256(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


@dataclass
class Grant:
    """An issued code: for whom, where it may go back to, and its PKCE challenge."""

    account: Any
    redirect_uri: str
    challenge: str
    nonce: str = ""


class _Handler(BaseHTTPRequestHandler):
    provider: Any

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for key, value in {"content-type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.provider.get(self, url.path, {k: v[0] for k, v in parse_qs(url.query).items()})

    def do_POST(self) -> None:
        self.provider.post(self, urlsplit(self.path).path, self._form())


class _Base:
    def __init__(self) -> None:
        handler = type("Handler", (_Handler,), {"provider": self})
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.grants: dict[str, Grant] = {}
        self.lock = threading.Lock()

    def issue(self, handler: _Handler, query: dict[str, str], account: Any) -> None:
        """The consent step, already given: back to the client with a code."""
        if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
            handler._reply(400, {"error": "invalid_request"})
            return
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.grants[code] = Grant(account, query["redirect_uri"], query["code_challenge"], query.get("nonce", ""))
        target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query.get("state", "")})
        handler._reply(302, headers={"location": target})

    def redeem(self, form: dict[str, str]) -> Grant | None:
        """The grant of a token request's code, once, when its redirect_uri
        and PKCE verifier match."""
        with self.lock:
            grant = self.grants.pop(form.get("code", ""), None)
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return None
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return None
        return grant


@dataclass
class GitHubAccount:
    id: int
    login: str
    emails: list[dict[str, Any]]
    name: str = ""


class GitHub(_Base):
    """GitHub's web flow and the two REST calls a sign-in makes. The browser
    is "signed in at GitHub" as ``signed_in``."""

    def __init__(self) -> None:
        super().__init__()
        self.signed_in: GitHubAccount | None = None
        self.tokens: dict[str, GitHubAccount] = {}
        # Set: /user/emails answers only once this many callers wait there, so
        # concurrent sign-ins reach the database together (the race tests).
        self.barrier: threading.Barrier | None = None

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def account(self, email: str, *, verified: bool = True) -> GitHubAccount:
        number = secrets.randbelow(10**9) + 1
        return GitHubAccount(number, f"user{number}", [{"email": email, "primary": True, "verified": verified}])

    def get(self, handler: _Handler, path: str, query: dict[str, str]) -> None:
        if path == "/login/oauth/authorize":
            assert self.signed_in is not None, "no one is signed in at the GitHub server"
            self.issue(handler, query, self.signed_in)
            return
        account = self.tokens.get(handler.headers.get("authorization", "").removeprefix("Bearer "))
        if account is None:
            handler._reply(401, {"message": "Bad credentials"})
        elif path == "/api/user":
            handler._reply(200, {"id": account.id, "login": account.login, "name": account.name or None})
        elif path == "/api/user/emails":
            if self.barrier is not None:
                self.barrier.wait(10)
            handler._reply(200, [{**e, "visibility": None} for e in account.emails])
        else:
            handler._reply(404, {"message": "Not Found"})

    def post(self, handler: _Handler, path: str, form: dict[str, str]) -> None:
        if path != "/login/oauth/access_token" or form.get("client_secret") != CLIENT_SECRET:
            handler._reply(200, {"error": "incorrect_client_credentials"})  # GitHub answers errors with 200
            return
        grant = self.redeem(form)
        if grant is None:
            handler._reply(200, {"error": "bad_verification_code"})
            return
        token = "gho_" + secrets.token_urlsafe(24)
        self.tokens[token] = grant.account
        handler._reply(200, {"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})


@dataclass
class OidcAccount:
    sub: str
    email: str
    email_verified: bool = True


@dataclass
class TokenFaults:
    """What the next id_token gets wrong."""

    audience: str | None = None
    expires_in: int = 300
    extra: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()  # claims left out
    alg: str = "RS256"  # "HS256": keyed with the client secret; "none": unsigned


class TinyOidc(_Base):
    """An OpenID Connect provider: discovery, JWKS, authorize (consent
    given) and token, its id_token signed with a fresh RSA key."""

    def __init__(self) -> None:
        super().__init__()
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.signed_in: OidcAccount | None = None
        self.faults = TokenFaults()

    def get(self, handler: _Handler, path: str, query: dict[str, str]) -> None:
        if path == "/.well-known/openid-configuration":
            handler._reply(
                200,
                {
                    "issuer": self.url,
                    "authorization_endpoint": self.url + "/authorize",
                    "token_endpoint": self.url + "/token",
                    "jwks_uri": self.url + "/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    # As a hostile provider might: the client must refuse the last two anyway.
                    "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                },
            )
        elif path == "/jwks":
            handler._reply(200, {"keys": [self.key.as_dict(private=False)]})
        elif path == "/authorize":
            assert self.signed_in is not None, "no one is signed in at the OpenID provider"
            self.issue(handler, query, self.signed_in)
        else:
            handler._reply(404, {"error": "not_found"})

    def post(self, handler: _Handler, path: str, form: dict[str, str]) -> None:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if path != "/token" or handler.headers.get("authorization") != expected:
            handler._reply(401, {"error": "invalid_client"})
            return
        grant = self.redeem(form)
        if grant is None:
            handler._reply(400, {"error": "invalid_grant"})
            return
        account: OidcAccount = grant.account
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": account.sub,
            "aud": self.faults.audience or CLIENT_ID,
            "iat": now,
            "exp": now + self.faults.expires_in,
            "nonce": grant.nonce,
            "email": account.email,
            "email_verified": account.email_verified,
            **self.faults.extra,
        }
        for name in self.faults.drop:
            claims.pop(name, None)
        if self.faults.alg == "none":
            id_token = ".".join(_b64(json.dumps(part).encode()) for part in ({"alg": "none"}, claims)) + "."
        elif self.faults.alg == "HS256":
            id_token = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(CLIENT_SECRET))
        else:
            id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)
        handler._reply(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": id_token})


@contextmanager
def running(provider: _Base) -> Iterator[Any]:
    thread = threading.Thread(target=provider.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.http.shutdown()
        provider.http.server_close()
        thread.join(5)
