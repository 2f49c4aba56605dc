"""The ``bearerguard`` command: ``demo`` runs the main job (``inspect`` arrives with issue 7)."""

from __future__ import annotations

import sys

__all__ = ["main"]

USAGE = """usage: bearerguard COMMAND [options]

commands:
  demo       run the example API and a development issuer on 127.0.0.1
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from bearerguard.demo import main as demo

        return demo(rest)
    print(f"bearerguard: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
