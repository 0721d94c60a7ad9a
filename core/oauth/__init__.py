"""Signing in with Google (OpenID Connect) and GitHub (OAuth 2), and linking
those accounts to users: the flow cookie (``flow``), one module per provider
(``oidc``, ``github``), the tables and the service."""
