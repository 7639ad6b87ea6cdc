"""Regenerate docs/cli.md from the parsers, so the page always matches `tdmi <command> --help`.

    python scripts/write_cli_docs.py          # rewrite docs/cli.md
    python scripts/write_cli_docs.py --check  # exit 1 if docs/cli.md is stale (tests/test_cli.py runs this check)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def render() -> str:
    from tdmi.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it so the page is stable
    parser = build_parser()
    parts = ["# Command line\n",
             "Generated from the parsers by `python scripts/write_cli_docs.py`; "
             "`tdmi <command> --help` prints the same.\n",
             "```text\n" + parser.format_help().rstrip() + "\n```\n"]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        parts.append(f"## tdmi {name}\n")
        parts.append("```text\n" + sub.format_help().rstrip() + "\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python scripts/write_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
