"""The command line and composition root: nothing imports this module.

Only ``serve`` exists so far, and it cannot serve yet: the trio shell and the OpenAI-compatible
endpoint come with their own issue. Until then ``serve`` loads and checks the catalog and the
config file, says what it would route, and exits non-zero with a message saying exactly that.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from freellm import __version__
from freellm.core.catalog import Catalog, ConfigError
from freellm.shell.config import load_catalog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001
NOT_YET = 3  # exit status of a command that is not built yet


def default_data_dir() -> Path:
    configured = os.environ.get("FREELLM_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path("~/.local/share/freellm").expanduser()


def config_path(data_dir: Path, given: Path | None) -> Path | None:
    """``--config`` if given, else ``<data-dir>/freellm.toml`` if it exists."""
    if given is not None:
        return given
    candidate = data_dir / "freellm.toml"
    return candidate if candidate.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=None, help="default: $FREELLM_DATA_DIR")
    common.add_argument(
        "--config", type=Path, default=None, help="default: <data-dir>/freellm.toml"
    )

    parser = argparse.ArgumentParser(
        prog="freellm", description="One OpenAI-compatible endpoint for many free LLM tiers."
    )
    parser.add_argument("--version", action="version", version=f"freellm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="run the API and dashboard")
    serve.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    return parser


def serve(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or default_data_dir()
    path = config_path(data_dir, args.config)
    try:
        catalog = load_catalog(path)
    except ConfigError as exc:
        print(f"freellm: bad config: {exc}", file=sys.stderr)
        return 2
    print(describe(catalog, path))
    print(
        f"freellm: not yet serving on http://{args.host}:{args.port}/v1: the routing core is "
        "built, the server that uses it comes with the next issue (the trio shell and the "
        "OpenAI-compatible endpoint).",
        file=sys.stderr,
    )
    return NOT_YET


def describe(catalog: Catalog, path: Path | None) -> str:
    models = sum(len(p.models) for p in catalog.providers.values())
    lines = [
        f"catalog of {catalog.updated or 'unknown date'}: {len(catalog.providers)} providers, "
        f"{models} models; config: {path or 'none'}",
        "fallback chain (auto):",
    ]
    lines += [
        f"  {index:2}. {target.name}" for index, target in enumerate(catalog.chain_targets, 1)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse allows no other


if __name__ == "__main__":
    sys.exit(main())
