"""Google, or any OpenID Connect provider named by its issuer (Keycloak,
Authentik): discovery, authorization code with PKCE, and the id_token checked
as OpenID Connect Core §3.1.3.7 says (signature from the provider's JWKS,
iss, aud, azp, exp, iat, nonce). The account is keyed on ``sub``."""

from __future__ import annotations

import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet

from core.config import GOOGLE_ISSUER, OAuthProviderSettings
from core.oauth.flow import Flow
from core.oauth.provider import Identity, authorization_url, exchange_code, failed, fetch_json

CACHE_SECONDS = 3600  # discovery document and keys; an unknown key id fetches the keys again
LEEWAY_SECONDS = 60  # clock skew allowed on exp and iat
SCOPE = "openid email profile"
# Asymmetric algorithms only: "none" and HMAC (keyed with the client secret) are never accepted.
_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class OpenIdProvider:
    name = "google"

    def __init__(self, settings: OAuthProviderSettings) -> None:
        self.issuer = settings.url
        self.client_id = settings.client_id or ""  # set: the service builds configured providers only
        self.client_secret = settings.client_secret or ""
        self.label = "Google" if self.issuer == GOOGLE_ISSUER else "The sign-in provider"
        self._metadata: dict[str, Any] | None = None
        self._metadata_until = 0.0
        self._keys: KeySet | None = None
        self._keys_until = 0.0

    async def metadata(self, http: httpx.AsyncClient) -> dict[str, Any]:
        """The issuer's discovery document (cached), checked to name the
        configured issuer and the endpoints the flow needs."""
        if self._metadata is None or time.monotonic() > self._metadata_until:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            data = await fetch_json(http, "GET", url, label=self.label)
            if not isinstance(data, dict) or data.get("issuer") != self.issuer:
                raise failed(f"{self.label}'s discovery document names another issuer")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(data.get(key), str):
                    raise failed(f"{self.label}'s discovery document has no {key}")
            self._metadata, self._metadata_until = data, time.monotonic() + CACHE_SECONDS
        return self._metadata

    async def authorize_url(self, http: httpx.AsyncClient, flow: Flow, redirect_uri: str) -> str:
        metadata = await self.metadata(http)
        return authorization_url(
            metadata["authorization_endpoint"], self.client_id, redirect_uri, SCOPE, flow, nonce=flow.nonce
        )

    async def identity(
        self, http: httpx.AsyncClient, *, code: str, redirect_uri: str, flow: Flow, issuer: str
    ) -> Identity:
        metadata = await self.metadata(http)
        if issuer and issuer != self.issuer:  # RFC 9207: the answer came from another issuer
            raise failed(f"the answer came from another issuer than {self.label}")
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        token = await exchange_code(
            http,
            metadata["token_endpoint"],
            client_id=self.client_id,
            client_secret=self.client_secret,
            code=code,
            redirect_uri=redirect_uri,
            verifier=flow.verifier,
            basic_auth="client_secret_basic" in methods,
            label=self.label,
        )
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise failed(f"{self.label} sent no id_token")
        claims = await self.verified_claims(http, id_token, flow.nonce)
        verified = claims.get("email_verified")
        return Identity(
            subject=str(claims["sub"]),
            email=str(claims.get("email") or ""),
            # Some providers send the JSON string "true" (an old Google habit).
            email_verified=verified is True or verified == "true",
            name=str(claims.get("name") or ""),
        )

    async def verified_claims(self, http: httpx.AsyncClient, id_token: str, nonce: str) -> dict[str, Any]:
        """The id_token's claims once its signature and claims pass, else OAUTH_FAILED."""
        metadata = await self.metadata(http)
        offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in offered if a in _ALGORITHMS]
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(http), algorithms=algorithms)
            except (JoseError, ValueError):
                # A key rotated since the keys were cached: fetch them once more.
                token = jwt.decode(id_token, await self._key_set(http, refresh=True), algorithms=algorithms)
        except (JoseError, ValueError):
            raise failed(f"the id_token from {self.label} is not validly signed") from None
        issuers = [self.issuer] + (["accounts.google.com"] if self.issuer == GOOGLE_ISSUER else [])
        registry = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "values": issuers},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            iat={"essential": True},  # OpenID Connect Core §2: required; not in the future either
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        claims = dict(token.claims)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise failed(f"the id_token from {self.label} has expired; start again") from None
        except JoseError as exc:
            claim = getattr(exc, "claim", "") or "a claim"
            raise failed(f"the id_token from {self.label} failed its check of '{claim}'") from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        # azp names the party the token was issued to: when present (or needed,
        # with several audiences) it must be us.
        if ("azp" in claims or len(audiences) > 1) and claims.get("azp") != self.client_id:
            raise failed(f"the id_token from {self.label} was issued to another party (azp)")
        return claims

    async def _key_set(self, http: httpx.AsyncClient, *, refresh: bool = False) -> KeySet:
        if refresh or self._keys is None or time.monotonic() > self._keys_until:
            metadata = await self.metadata(http)
            data = await fetch_json(http, "GET", metadata["jwks_uri"], label=self.label)
            try:
                self._keys = KeySet.import_key_set(data)
            except (JoseError, ValueError, TypeError, KeyError):
                raise failed(f"{self.label}'s signing keys could not be read") from None
            self._keys_until = time.monotonic() + CACHE_SECONDS
        return self._keys
