"""The ``bearerguard`` command: ``demo`` runs the main job, ``inspect`` explains a token's verdict.

``inspect`` exits 0 when the token is valid, 1 when it is refused, 2 on a usage
error and 3 when the issuer's metadata or keys cannot be had (the middleware
would answer 503). It prints the token only as a short SHA-256 prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from typing import Any, TextIO

from bearerguard._config import DEFAULT_ALGORITHMS, FetchPolicy, Issuer
from bearerguard._urls import check_url
from bearerguard._validator import DEFAULT_MAX_TOKEN_LENGTH

__all__ = ["EXIT_INVALID", "EXIT_UNAVAILABLE", "EXIT_USAGE", "EXIT_VALID", "main"]

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

USAGE = """usage: bearerguard COMMAND [options]

commands:
  demo       run the example API and a development issuer on 127.0.0.1
  inspect    explain why a token is accepted or refused (bearerguard inspect --help)
"""

#: Read at most this much of stdin: far above any token the middleware accepts.
_MAX_STDIN = 1024 * 1024
_BEARER_PREFIX = re.compile(r"^\s*(?:authorization\s*:\s*)?bearer\s+", re.IGNORECASE)
_MARK = {"pass": "PASS", "fail": "FAIL", "info": "info", "skip": "skip"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command == "demo":
        from bearerguard._demo import main as demo

        return demo(rest)
    if command == "inspect":
        return inspect_main(rest)
    print(f"bearerguard: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE


# -- inspect ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bearerguard inspect",
        description=(
            "Decode a bearer token without trusting it, fetch the configured issuer's "
            "metadata and keys, and explain every check the middleware makes. The token is "
            "sent nowhere (an opaque token goes to the configured issuer's introspection "
            "endpoint, and only when --client-id is given); it is printed only as a SHA-256 "
            "prefix. Exit status: 0 valid, 1 invalid, 2 usage error, 3 issuer unavailable."
        ),
    )
    parser.add_argument(
        "token",
        metavar="TOKEN",
        help="the access token, or '-' to read it from stdin (keeps it out of shell history); "
        "a leading 'Bearer ' or 'Authorization: Bearer ' is ignored",
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="take the issuers from your application's BearerAuthMiddleware (as uvicorn "
        "names an app, e.g. main:app), so the explanation matches what the API does; "
        "the issuer options below are then not used",
    )
    parser.add_argument("--issuer", help="the trusted issuer, exactly as configured")
    parser.add_argument(
        "--audience",
        action="append",
        help="this API's audience (repeat for several)",
    )
    parser.add_argument("--jwks-uri", help="the issuer's JWKS URL (skips discovery)")
    parser.add_argument(
        "--algorithms",
        action="append",
        help="allowed algorithms, comma-separated or repeated "
        f"(default: {','.join(DEFAULT_ALGORITHMS)})",
    )
    parser.add_argument(
        "--leeway", type=float, default=60.0, help="clock leeway in seconds (default 60)"
    )
    parser.add_argument(
        "--rfc9068", action="store_true", help="strict RFC 9068 mode (typ at+jwt, more claims)"
    )
    parser.add_argument(
        "--required-claim", action="append", default=[], help="a claim that must be present"
    )
    parser.add_argument(
        "--require-scope",
        action="append",
        default=[],
        help="a scope the route needs (repeat for several); missing ones make it invalid",
    )
    parser.add_argument(
        "--max-token-length",
        type=int,
        default=DEFAULT_MAX_TOKEN_LENGTH,
        help=f"size cap in characters (default {DEFAULT_MAX_TOKEN_LENGTH})",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per fetch from the issuer (default 5)"
    )
    parser.add_argument(
        "--client-id", help="this API's client id at the issuer, to introspect opaque tokens"
    )
    parser.add_argument(
        "--client-secret-env",
        metavar="VAR",
        help="the environment variable holding the client secret (never on the command line)",
    )
    parser.add_argument(
        "--introspection-endpoint", help="the RFC 7662 endpoint (default: from the metadata)"
    )
    parser.add_argument(
        "--introspection-auth",
        choices=("client_secret_basic", "client_secret_post"),
        default="client_secret_basic",
        help="how the client authenticates to the introspection endpoint",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def inspect_main(argv: list[str], *, stdin: TextIO | None = None) -> int:
    """``bearerguard inspect``: parse options, diagnose, print, return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the message
        return EXIT_VALID if exc.code == 0 else EXIT_USAGE
    client = None
    try:
        token = _read_token(args.token, stdin if stdin is not None else sys.stdin)
        if args.app:
            from bearerguard._from_app import config_from_app

            app = config_from_app(args.app)
            issuer = app.issuer_for(token)
            client, args.max_token_length = app.http_client, app.max_token_length
        else:
            issuer = _issuer(args)
    except ValueError as exc:
        print(f"bearerguard inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from bearerguard._diagnose import diagnose

    try:
        report = asyncio.run(
            diagnose(
                token,
                issuer,
                client=client,
                max_token_length=args.max_token_length,
                required_scopes=tuple(args.require_scope),
            )
        )
    except ValueError as exc:  # a configuration the middleware would refuse as well
        print(f"bearerguard inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    code = {"valid": EXIT_VALID, "invalid": EXIT_INVALID, "unavailable": EXIT_UNAVAILABLE}[
        report.verdict
    ]
    if args.json:
        print(json.dumps({**report.to_json(), "exit_code": code}, indent=2, ensure_ascii=True))
    else:
        print(render(report, issuer, tuple(args.require_scope)))
    return code


def _read_token(arg: str, stdin: TextIO) -> str:
    raw = stdin.read(_MAX_STDIN) if arg == "-" else arg
    token = _BEARER_PREFIX.sub("", raw.strip()).strip()
    if not token:
        raise ValueError("no token given" + (" on stdin" if arg == "-" else ""))
    return token


def _issuer(args: argparse.Namespace) -> Issuer:
    if not args.issuer or not args.audience:
        raise ValueError("--issuer and --audience are required (or --app module:attr)")
    algorithms = tuple(
        a.strip() for value in (args.algorithms or [",".join(DEFAULT_ALGORITHMS)])
        for a in value.split(",") if a.strip()
    )  # fmt: skip
    if args.leeway < 0:
        raise ValueError("--leeway must not be negative")
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    if args.max_token_length <= 0:
        raise ValueError("--max-token-length must be positive")
    try:
        check_url(args.jwks_uri if args.jwks_uri else args.issuer)
    except ValueError as exc:
        which = "--jwks-uri" if args.jwks_uri else "--issuer"
        raise ValueError(f"{which}: {exc}") from None
    secret: str | None = None
    if args.client_secret_env:
        secret = os.environ.get(args.client_secret_env)
        if not secret:
            raise ValueError(f"--client-secret-env: ${args.client_secret_env} is not set")
    if (args.client_id is None) != (secret is None):
        raise ValueError("introspection needs both --client-id and --client-secret-env")
    if args.introspection_endpoint:
        try:
            check_url(args.introspection_endpoint)
        except ValueError as exc:
            raise ValueError(f"--introspection-endpoint: {exc}") from None
    return Issuer(
        issuer=args.issuer,
        audience=tuple(args.audience),
        jwks_uri=args.jwks_uri,
        algorithms=algorithms,
        leeway=args.leeway,
        rfc9068=args.rfc9068,
        required_claims=tuple(args.required_claim),
        client_id=args.client_id,
        client_secret=secret,
        introspection_endpoint=args.introspection_endpoint,
        introspection_auth=args.introspection_auth,
        # Opaque tokens go to the configured issuer's introspection endpoint, and only
        # when credentials were given on purpose; otherwise the token goes nowhere.
        opaque="introspect" if secret is not None else "reject",
        fetch=FetchPolicy(timeout=args.timeout),
    )


def render(report: Any, issuer: Issuer, required_scopes: tuple[str, ...] = ()) -> str:
    """The human-readable report: what the token says, each check, then the verdict."""
    from bearerguard._diagnose import show

    lines = [
        f"token      sha256:{report.token_sha256}…  {report.length:,} characters "
        "(the token itself is not shown)",
        f"issuer     {issuer.issuer}   "
        + (
            f"audience {', '.join(issuer.audiences)}"
            if issuer.audiences
            else f"clients {', '.join(issuer.client_ids or ())}"
        ),
    ]
    if report.header is not None:
        lines.append(f"header     {show(report.header, 400)}")
    if report.claims is not None:
        claims = json.dumps(report.claims, indent=2, ensure_ascii=True).splitlines()
        lines.append(f"claims     {claims[0]}")
        lines.extend(f"           {line}" for line in claims[1:])
    if report.signature is not None:
        lines.append(f"signature  {report.signature}")
    lines.append("")
    width = max((len(c.name) for c in report.checks), default=0)
    for check in report.checks:
        lines.append(f"  {_MARK[check.status]}  {check.name.ljust(width)}  {check.detail}")
    lines.append("")
    lines.append(_verdict_line(report, required_scopes))
    return "\n".join(lines)


def _verdict_line(report: Any, required_scopes: tuple[str, ...]) -> str:
    if report.verdict == "valid":
        scopes = " ".join(report.scopes) or "none"
        return f"VALID: the API accepts this token (scopes: {scopes})"
    if report.verdict == "unavailable":
        return (
            f"UNAVAILABLE ({report.reason}): {report.description}. The API answers 503 with "
            "Retry-After; the token was not judged"
        )
    if report.reason == "insufficient_scope":
        missing = " ".join(s for s in required_scopes if s not in report.scopes)
        return (
            f"INVALID (insufficient_scope): the token lacks {missing}. The API answers 403 "
            f'error="insufficient_scope"'
        )
    return (
        f"INVALID ({report.reason}): the API answers 401 "
        f'error="invalid_token" error_description="{report.description}"'
    )
