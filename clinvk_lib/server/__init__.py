"""The HTTP server; ``serve`` is its composition root."""

from ..deferred import defer

# TLS and the hashes serve some requests only (webhooks, Redis over TLS, API keys, idempotency
# keys), and loading them maps libssl and libcrypto (~5 MB resident): not while idle.
defer("ssl", "hashlib", "hmac")
