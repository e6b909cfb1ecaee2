"""PyJWT, imported without the cryptography package when the catalog verifies HMAC tokens only.

PyJWT imports cryptography whenever it is installed, for its RS*/ES* algorithms: ~11 MB of
memory in the process (19 MB against 30 MB for ``import jwt`` alone), of a device's 80 MB
budget. A catalog whose ``auth.jwt_algorithms`` are HMAC (the default) never uses it, so
``create_app`` calls ``prepare`` before anything imports jwt; with RS*/ES* PyJWT is imported as
usual. A process that already holds PyJWT (or cryptography) keeps what it has. No Flask.
"""

from __future__ import annotations

import sys


def prepare(*, public_keys: bool) -> None:
    """Import PyJWT now, with cryptography hidden from it unless ``public_keys`` (RS*/ES*
    tokens) need it; a no-op once jwt is loaded."""
    if public_keys or "jwt" in sys.modules or "cryptography" in sys.modules:
        return
    sys.modules["cryptography"] = None  # type: ignore[assignment]  # its import: ImportError
    try:
        import jwt  # noqa: F401
    finally:
        del sys.modules["cryptography"]
