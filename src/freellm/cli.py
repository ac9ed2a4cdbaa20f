"""The command line and composition root: nothing imports this module.

``serve`` opens the runtime (store, keys, state, background work), builds the web app and runs
hypercorn under the same nursery. The other commands work on the store directly, so they also
work while a server runs: it applies every change within about a second (shell.live).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio
from dotenv import load_dotenv

from freellm import __version__
from freellm.core import health as health_
from freellm.core.catalog import AUTO, CHAIN_NAME, Catalog, ConfigError, with_chain
from freellm.core.keys import Refused, clean_label, clean_secret
from freellm.shell.config import load_catalog
from freellm.shell.live import UNIFIED_KEY_ID, UNIFIED_KEY_SETTING, health_of
from freellm.shell.probes import probe_key
from freellm.shell.runtime import open_runtime, read_unified_key
from freellm.shell.secrets import SecretsError, Vault, load_master_key, new_unified_key
from freellm.shell.store import open_store
from freellm.shell.upstream import open_upstreams

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3001


class Failed(Exception):
    """A command could not do what was asked; the message says why, for the user."""


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

    serve = commands.add_parser("serve", parents=[common], help="run the API")
    serve.add_argument("--host", default=os.environ.get("HOST", DEFAULT_HOST))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))

    token = commands.add_parser("token", parents=[common], help="print the unified key")
    token.add_argument("--regenerate", action="store_true", help="replace it with a new one")

    keys = commands.add_parser("keys", help="manage provider keys").add_subparsers(
        dest="action", required=True
    )
    add = keys.add_parser("add", parents=[common], help="add a provider key")
    add.add_argument("provider")
    add.add_argument("secret", help="the key; use - to read it from standard input")
    add.add_argument("--label", default="")
    keys.add_parser("list", parents=[common], help="list keys (never their secrets)")
    remove = keys.add_parser("remove", parents=[common], help="remove a key")
    remove.add_argument("id")
    check = keys.add_parser("check", parents=[common], help="check keys with their provider")
    check.add_argument("id", nargs="?")
    enable = keys.add_parser("enable", parents=[common], help="let routing use a key again")
    enable.add_argument("id")
    disable = keys.add_parser("disable", parents=[common], help="keep a key out of routing")
    disable.add_argument("id")
    edit = keys.add_parser("edit", parents=[common], help="change a key's label or secret")
    edit.add_argument("id")
    edit.add_argument("--label", default=None)
    edit.add_argument("--secret", default=None, help="the new key; use - to read it from stdin")

    demo = commands.add_parser(
        "demo", help="fake providers + a server: try freellm without any provider key"
    )
    demo.add_argument("--host", default=DEFAULT_HOST)
    demo.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    demo.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    demo.add_argument("--config", type=Path, default=None, help=argparse.SUPPRESS)

    chain = commands.add_parser("chain", help="the fallback chain").add_subparsers(
        dest="action", required=True
    )
    chain_show = chain.add_parser(
        "show", parents=[common], help="print the chain `auto` (or `auto:NAME`) follows"
    )
    chain_set = chain.add_parser("set", parents=[common], help="replace the chain")
    chain_set.add_argument("entries", nargs="+", metavar="PROVIDER/MODEL")
    for command in (chain_show, chain_set):
        command.add_argument(
            "--name", default=None, help="a named chain ([router.chains]), for `auto:NAME`"
        )

    replay = commands.add_parser(
        "replay", parents=[common], help="replay recorded traffic: what do these keys give?"
    )
    replay.add_argument("trace", type=Path)
    replay.add_argument(
        "--format",
        default=None,
        help="azure | mooncake | freellm | csv:MAPPING (default: detected)",
    )
    replay.add_argument(
        "--keys", nargs="+", default=[], metavar="PROVIDER=N", help="default: the stored keys"
    )
    replay.add_argument("--mode", choices=("core", "live"), default="core")
    replay.add_argument("--speed", type=float, default=60.0, help="live mode: virtual/real time")
    replay.add_argument("--seed", type=int, default=0)
    replay.add_argument(
        "--sample",
        type=float,
        default=None,
        metavar="F",
        help="keep about this fraction (0-1) of the conversations, drawn with --seed",
    )
    replay.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="play the (sampled) trace N times in a row, each copy a minute after the last",
    )
    replay.add_argument(
        "--policy",
        choices=("freellm", "first-fit", "round-robin", "least-used", "all"),
        default="freellm",
    )
    replay.add_argument("--suggest", action="store_true", help="rank one more key per provider")
    replay.add_argument("--json", action="store_true", help="print one JSON object")
    replay.add_argument("--report", type=Path, default=None, metavar="OUT.html")

    export = commands.add_parser(
        "export-trace", parents=[common], help="this instance's traffic as a trace (no text)"
    )
    export.add_argument("--since", default=None, help="days back, or an ISO date")
    export.add_argument("-o", "--output", type=Path, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # A .env in the working directory sets the environment (ENCRYPTION_KEY, FREELLM_DATA_DIR,
    # HOST, PORT) for every command alike, so that they agree; the real environment wins.
    load_dotenv(Path.cwd() / ".env", override=False)
    args = build_parser().parse_args(argv)
    if args.command != "demo":  # the demo keeps to a scratch dir of its own
        args.data_dir = args.data_dir or default_data_dir()
        args.config_file = config_path(args.data_dir, args.config)
    command = COMMANDS[(args.command, getattr(args, "action", None))]
    try:
        return trio.run(command, args)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        # Errors from inside the server's nurseries arrive wrapped in exception groups.
        problem = _user_facing(exc, args)
        if problem is None:
            raise
        print(f"freellm: {problem}", file=sys.stderr)
        return 2


def _user_facing(exc: BaseException, args: argparse.Namespace) -> str | None:
    """What a user can act on (bad config or key, a port in use), said plainly, if that is what
    ``exc`` is; ``None`` for anything else (a bug: let its traceback show)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE and hasattr(args, "port"):
        return (
            f"port {args.port} on {args.host} is already in use: stop what holds it, or pick"
            " another port with --port N (or PORT=N)"
        )
    if isinstance(exc, ConfigError | SecretsError | Failed | OSError):
        return str(exc)
    return None


# --- serve ------------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> int:
    from freellm.web.server import serve_runtime  # the web layer is only needed to serve

    runtime_cm = open_runtime(args.data_dir, args.config_file, env=os.environ)
    async with runtime_cm as runtime, trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(serve_runtime, runtime, args.host, args.port, shutdown_trigger=_signal)
        )
        print(f"freellm {__version__} serving {url}/v1", flush=True)
        print(f"dashboard: {url}/ (log in with the unified key)", flush=True)
        if runtime.created_unified_key:
            print(
                "your unified API key (shown once; `freellm token` prints it again): "
                f"{runtime.unified_key}",
                flush=True,
            )
        if not runtime.holder.state.topology.keys:
            print(
                f"no provider keys yet: add one on {url}/keys"
                " or with `freellm keys add PROVIDER KEY`"
            )
        _warn_if_exposed(args.host)
    return 0


def exposure_warning(host: str) -> str | None:
    """What to tell the user when serving on ``host`` lets other machines in; ``None`` for a
    loopback address (``127.0.0.0/8``, ``::1``, ``localhost``).

    Anything else is taken as reachable: a LAN or public address, every interface (``0.0.0.0``,
    ``::``, an empty host), and any other host name (what it resolves to is not known here).
    """
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None  # a host name, or nothing at all
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address is not None and address.is_loopback:
        return None
    if not name or (address is not None and address.is_unspecified):
        where = "every network interface"
    elif address is None:
        where = f"{host!r}, a name that may not be this machine's loopback address"
    else:
        where = str(address)
    return (
        f"freellm is listening on {where}, so it is reachable from other machines: anyone who"
        " has the unified key can use your provider keys. Serve on 127.0.0.1 (the default)"
        " unless you mean to share it, and then put it behind HTTPS (a reverse proxy): over"
        " plain HTTP the unified key and the dashboard's cookie cross the network readable."
    )


def _warn_if_exposed(host: str) -> None:
    warning = exposure_warning(host)
    if warning is not None:
        print(f"freellm: WARNING: {warning}", file=sys.stderr, flush=True)


async def _signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


# --- demo -------------------------------------------------------------------------------------

DEMO_PROVIDERS = {
    # provider: (fake flavor, model, caps the fake enforces and the config declares)
    "groq": ("groq", "llama-3.3-70b-versatile", {"rpm": 30, "rpd": 1000, "tpm": 12000}),
    "cerebras": ("cerebras", "qwen-3-235b-a22b-instruct-2507", {"rpm": 30, "tpm": 60000}),
    "openrouter": ("openrouter", "meta-llama/llama-3.3-70b-instruct:free", {"rpm": 20, "rpd": 50}),
    # Native dialects: freellm translates to Gemini's and Cohere's own APIs.
    "google": ("gemini", "gemini-2.5-flash", {"rpm": 10, "rpd": 250}),
    "cohere": ("cohere", "command-a-03-2025", {"rpm": 20, "rpd": 33}),
}


DEMO_EMBEDDINGS = {
    # provider: an embedding model its fake serves too (the bundled catalog's entry and caps)
    "google": ("gemini-embedding-001", {"rpm": 100, "rpd": 1000, "tpm": 30000}),
    "cohere": ("embed-v4.0", {"rpm": 20, "rpd": 33}),
}

DEMO_BODY = '{"model": "auto", "messages": [{"role": "user", "content": "Hello!"}]}'


async def demo(args: argparse.Namespace) -> int:
    """Fake providers on loopback, freellm in front of them, and a curl line to try."""
    from freellm.sim.fakes import FakeCaps, open_fake_provider
    from freellm.web.server import serve_runtime

    with tempfile.TemporaryDirectory(prefix="freellm-demo-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        await trio.to_thread.run_sync(partial(data_dir.mkdir, parents=True, exist_ok=True))
        env = {"ENCRYPTION_KEY": os.environ.get("ENCRYPTION_KEY") or secrets.token_hex(32)}
        async with contextlib.AsyncExitStack() as stack:
            config = []
            for provider, (flavor, model, caps) in DEMO_PROVIDERS.items():
                models = {model: FakeCaps(**caps)}
                if provider in DEMO_EMBEDDINGS:
                    embedding, embedding_caps = DEMO_EMBEDDINGS[provider]
                    models[embedding] = FakeCaps(**embedding_caps)
                fake = await stack.enter_async_context(
                    open_fake_provider(flavor, keys=[f"demo-{provider}-key"], models=models)
                )
                cap_lines = "".join(f"{name} = {value}\n" for name, value in caps.items())
                config.append(
                    f'[providers.{provider}]\nbase_url = "{fake.base_url}"\n'
                    f'[[providers.{provider}.models]]\nid = "{model}"\n{cap_lines}'
                    "context = 131072\ntools = true\njson = true\n"
                )
            chain = ", ".join(f'"{p}/{m}"' for p, (_, m, _) in DEMO_PROVIDERS.items())
            config.append(f"[router]\nchain = [{chain}]\n")
            config_path = data_dir / "freellm.toml"
            await trio.Path(config_path).write_text("\n".join(config), encoding="utf-8")
            vault = Vault(load_master_key(data_dir, env["ENCRYPTION_KEY"]))
            async with open_store(data_dir / "freellm.db") as store:
                if not await store.list_keys():
                    for provider in DEMO_PROVIDERS:
                        secret = f"demo-{provider}-key"
                        await store.add_key(
                            provider, "demo", partial(_seal, vault, provider, secret)
                        )
            runtime = await stack.enter_async_context(
                open_runtime(data_dir, config_path, env=env, probes=False)
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            url = await nursery.start(
                partial(serve_runtime, runtime, args.host, args.port, shutdown_trigger=_signal)
            )
            fakes = ", ".join(DEMO_PROVIDERS)
            print(f"freellm demo: fake {fakes} behind {url}/v1")
            print("try it (no provider key needed):\n")
            print(
                f"  curl {url}/v1/chat/completions \\\n"
                f'    -H "Authorization: Bearer {runtime.unified_key}" \\\n'
                '    -H "Content-Type: application/json" \\\n'
                f"    -d '{DEMO_BODY}'\n"
            )
            print(
                'Gemini\'s and Cohere\'s own APIs answer for "model": "google/gemini-2.5-flash" '
                'or "cohere/command-a-03-2025".'
            )
            print(
                "The same key answers /v1/messages (Anthropic's SDK), /v1/responses and "
                '/v1/embeddings ("model": "auto" is Gemini\'s gemini-embedding-001 there).'
            )
            print(f"The dashboard is at {url}/ (log in with the key above).")
            print("Ctrl-C stops it.", flush=True)
            _warn_if_exposed(args.host)
    return 0


def _seal(vault: Vault, provider: str, secret: str, key_id: str) -> bytes:
    return vault.seal(key_id, provider, secret)


LIVE = "a running server sees it within 2 s"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172_800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86_400)} days ago"


# --- store commands ---------------------------------------------------------------------------


async def _with_store(
    args: argparse.Namespace, work: Callable[[Any, Vault, Catalog], Awaitable[int]]
) -> int:
    catalog = load_catalog(args.config_file)
    vault = Vault(load_master_key(args.data_dir, os.environ.get("ENCRYPTION_KEY")))
    async with open_store(args.data_dir / "freellm.db") as store:
        return await work(store, vault, catalog)


async def token(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        if args.regenerate:
            key = new_unified_key()
            sealed = vault.seal(UNIFIED_KEY_ID, "freellm", key)
            await store.set_setting(UNIFIED_KEY_SETTING, sealed.hex())
            print(f"the old key no longer works ({LIVE})", file=sys.stderr)
        else:
            key, _ = await read_unified_key(store, vault)
        print(key)
        return 0

    return await _with_store(args, work)


async def keys_add(args: argparse.Namespace) -> int:
    secret = _checked(clean_secret(_secret_arg(args.secret)))
    label = _checked(clean_label(args.label))

    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        if args.provider not in catalog.providers:
            known = ", ".join(sorted(catalog.providers))
            raise Failed(f"unknown provider {args.provider!r} (known: {known})")
        record = await store.add_key(
            args.provider, label, lambda key_id: vault.seal(key_id, args.provider, secret)
        )
        print(f"added {record.id} ({args.provider}{', ' + label if label else ''})")
        return 0

    return await _with_store(args, work)


def _secret_arg(given: str) -> str:
    """The secret as given on the command line, or the first line of standard input for ``-``
    (the way to keep it out of the shell's history and the process list)."""
    return sys.stdin.readline() if given == "-" else given


def _checked(cleaned: str | Refused) -> str:
    """A checked secret or label; raises :class:`Failed` with the reason, which names the field
    ("the key ...", "the label ...") and never quotes the secret."""
    if isinstance(cleaned, Refused):
        raise Failed(cleaned.message[:1].lower() + cleaned.message[1:])
    return cleaned


async def keys_list(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        records = await store.list_keys()
        if not records:
            print("no keys yet: freellm keys add PROVIDER KEY")
        now = time.time()
        for r in records:
            state = "enabled" if r.enabled else "disabled"
            health = r.health or "unknown"
            checked = f", checked {_ago(now - r.last_check)}" if r.last_check else ""
            note = f" ({r.last_error})" if r.last_error else ""
            line = f"{r.id}  {r.provider:12} {r.label or '-':16} {state:8} {health}{checked}{note}"
            print(line)
        return 0

    return await _with_store(args, work)


async def keys_remove(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        if not await store.remove_key(args.id):
            raise Failed(f"no key {args.id!r}")
        print(f"removed {args.id}")
        return 0

    return await _with_store(args, work)


async def keys_check(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        records = [r for r in await store.list_keys() if args.id in (None, r.id)]
        if args.id is not None and not records:
            raise Failed(f"no key {args.id!r}")
        failed = 0
        async with open_upstreams() as upstreams:
            for r in records:
                provider = catalog.providers.get(r.provider)
                if provider is None:
                    continue
                secret = clean_secret(vault.unseal(r.id, r.provider, r.sealed))
                note: str | None
                if isinstance(secret, Refused):
                    # Stored before keys were checked on the way in, or by hand: sending it
                    # would break the request's header (and the error would quote it).
                    event = health_.Event.PROBE_INVALID
                    note = f"cannot be sent: {secret.message}"
                else:
                    event, note = await probe_key(upstreams, provider, secret)
                # The same transition the server makes for its own checks, from the health
                # the table holds (what the server saw); a running server adopts the result.
                table = health_.replace(health_.Health(), r.provider, r.id, health_of(r))
                table = health_.apply(table, r.provider, r.id, event, now=time.time(), error=note)
                entry = table.of(r.provider, r.id)
                await store.record_key_health(
                    r.id, entry.state.value, entry.checked_at, entry.last_error, since=entry.since
                )
                failed += entry.state is not health_.State.HEALTHY
                print(f"{r.id}  {r.provider:12} {entry.state.value}{f' ({note})' if note else ''}")
        return 1 if failed else 0

    return await _with_store(args, work)


async def keys_enable(args: argparse.Namespace) -> int:
    return await _set_enabled(args, True)


async def keys_disable(args: argparse.Namespace) -> int:
    return await _set_enabled(args, False)


async def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        if not await store.set_key_enabled(args.id, enabled):
            raise Failed(f"no key {args.id!r}")
        print(f"{'enabled' if enabled else 'disabled'} {args.id} ({LIVE})")
        return 0

    return await _with_store(args, work)


async def keys_edit(args: argparse.Namespace) -> int:
    if args.label is None and args.secret is None:
        raise Failed("nothing to change: give --label L and/or --secret S (- reads stdin)")
    secret = None if args.secret is None else _checked(clean_secret(_secret_arg(args.secret)))
    label = None if args.label is None else _checked(clean_label(args.label))

    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        record = await store.get_key(args.id)
        if record is None:
            raise Failed(f"no key {args.id!r}")
        if label is not None:
            await store.set_key_label(record.id, label)
        if secret is not None:
            # A new secret is a new key to health: it starts unknown (the store clears it).
            await store.update_key_secret(record.id, vault.seal(record.id, record.provider, secret))
        changed = " and ".join(
            name for name, given in (("label", label), ("secret", secret)) if given is not None
        )
        print(f"edited the {changed} of {record.id} ({LIVE})")
        return 0

    return await _with_store(args, work)


async def chain_show(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        name = _chain_name(args.name)
        catalog = with_chain(catalog, await store.get_chain(name) or (), name)
        targets = catalog.chain_targets if name is None else catalog.chains.get(name)
        if targets is None:
            known = ", ".join(sorted(catalog.chains)) or "none"
            print(f"no chain is named {name!r} (named chains: {known})", file=sys.stderr)
            return 1
        for index, target in enumerate(targets, 1):
            print(f"{index:2}. {target.name}")
        return 0

    return await _with_store(args, work)


async def chain_set(args: argparse.Namespace) -> int:
    async def work(store: Any, vault: Vault, catalog: Catalog) -> int:
        name = _chain_name(args.name)
        with_chain(catalog, args.entries, name)  # raises ConfigError for an unknown entry
        await store.set_chain(list(args.entries), name)
        print(f"chain set: {len(args.entries)} entries (a running server uses it within 2 s)")
        return 0

    return await _with_store(args, work)


def _chain_name(name: str | None) -> str | None:
    """``--name``: ``None`` (and ``auto``) is the chain ``auto`` follows. Raises
    :class:`ConfigError` for a name no chain may have."""
    if name is None or name == AUTO:
        return None
    if not CHAIN_NAME.fullmatch(name):
        raise ConfigError("--name", "a chain name is lower-case letters, digits, '-' and '_'")
    return name


# --- replay ------------------------------------------------------------------------------------


async def replay(args: argparse.Namespace) -> int:
    from freellm.sim.command import ReplayError, run_replay  # the simulator, only when asked

    try:
        return await run_replay(
            args.trace,
            format=args.format,
            config=args.config_file,
            data_dir=args.data_dir,
            keys=args.keys,
            mode=args.mode,
            speed=args.speed,
            seed=args.seed,
            policy=args.policy,
            suggest=args.suggest,
            as_json=args.json,
            report=args.report,
            sample=args.sample,
            repeat=args.repeat,
        )
    except ReplayError as exc:
        raise Failed(str(exc)) from None


async def export_trace(args: argparse.Namespace) -> int:
    from freellm.sim.command import ReplayError
    from freellm.sim.command import export_trace as export

    try:
        return await export(
            args.data_dir, since=args.since, output=args.output, now=time.time(), out=sys.stdout
        )
    except ReplayError as exc:
        raise Failed(str(exc)) from None


COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace], Awaitable[int]]] = {
    ("serve", None): serve,
    ("token", None): token,
    ("keys", "add"): keys_add,
    ("keys", "list"): keys_list,
    ("keys", "remove"): keys_remove,
    ("keys", "check"): keys_check,
    ("keys", "enable"): keys_enable,
    ("keys", "disable"): keys_disable,
    ("keys", "edit"): keys_edit,
    ("chain", "show"): chain_show,
    ("chain", "set"): chain_set,
    ("demo", None): demo,
    ("replay", None): replay,
    ("export-trace", None): export_trace,
}


if __name__ == "__main__":
    sys.exit(main())
