"""The benchmark's issuer: bearerguard's TestIssuer on 127.0.0.1, and pools of distinct tokens.

Tokens live an hour so a full run never sees one expire; every token carries its
own ``jti``, so no two are equal and no per-token cache can help a cold pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jwt.algorithms import get_default_algorithms

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
TOKEN_LIFETIME = 3600
SCOPE = "read:items write:items"


class BenchIssuer:
    """A TestIssuer with one key per benchmarked algorithm, serving its JWKS over loopback HTTP."""

    def __init__(self, algorithms: tuple[str, ...] = ALGORITHMS) -> None:
        from bearerguard.testing import TestIssuer

        self._issuer = TestIssuer(algorithms)
        self.issuer: str = self._issuer.issuer
        self.audience: str = self._issuer.audience
        self.jwks_uri: str = self._issuer.jwks_uri
        self._public: dict[str, Any] = {}
        algs = get_default_algorithms()
        for jwk in self._issuer.jwks()["keys"]:
            alg = jwk["alg"]
            public = {k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}
            self._public[alg] = algs[alg].from_jwk(json.dumps(public))

    def jwks(self) -> dict[str, Any]:
        return self._issuer.jwks()

    def public_key(self, alg: str) -> Any:
        return self._public[alg]

    @property
    def jwks_requests(self) -> int:
        """JWKS requests the issuer has answered so far."""
        return int(self._issuer.requests[self._issuer.jwks_path])

    def mint(self, alg: str = "RS256", **claims: Any) -> str:
        return self._issuer.mint(claims or None, alg=alg, scope=SCOPE, expires_in=TOKEN_LIFETIME)

    def pool(self, alg: str, n: int) -> list[str]:
        """``n`` distinct valid tokens signed with ``alg``."""
        return [self.mint(alg) for _ in range(n)]

    def rotate(self, alg: str = "RS256") -> str:
        """Publish a new key for ``alg`` (it signs from now on); returns its kid."""
        return self._issuer.add_key(alg)

    def mint_with_kid(self, kid: str, alg: str = "RS256") -> str:
        """A token naming ``kid`` but signed by the current key: for unknown-kid stampedes."""
        return self._issuer.mint(alg=alg, kid=kid, scope=SCOPE, expires_in=TOKEN_LIFETIME)

    def close(self) -> None:
        self._issuer.close()


def write_tokens(path: Path, tokens: list[str]) -> None:
    path.write_text("\n".join(tokens) + "\n", encoding="ascii")
