"""Who a request is: the subject, scopes and kind of credential that admitted it. No Flask.

Its own module because both the checks (``auth``) and the revocations they consult
(``revocation``) speak of it, and neither may import the other's side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    kind: str = "user"  # user | device | signed-url
    # Set for a device key: the one device it may write as.
    device_id: str = ""
    # A token's jti, or a device key's fingerprint: what an operator names to revoke it.
    credential_id: str = ""
    issued_at: float | None = None  # a token's iat; None when it carried none

    def can(self, scope: str) -> bool:
        return scope in self.scopes
