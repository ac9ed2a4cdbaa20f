"""The freellm servers a benchmark measures: which code each runs, and setting one up.

Two builds can run side by side in one benchmark, each from the bench's temporary directory as
``python -m freellm.cli`` with the venv's Python and ``PYTHONPATH=<its src>``. ``PYTHONPATH``
comes before the editable install's ``.pth`` entry on ``sys.path``, and ``-m`` puts the working
directory first, which holds no ``freellm``. The two builds:

- ``freellm``: the working tree of the checkout this file is in, uncommitted changes included;
- ``baseline``: a git ref, checked out with ``git worktree add --detach`` in the bench's temporary
  directory (removed on the way out, Ctrl-C included). It runs on the venv's dependencies: a ref
  that needs others fails to start, and the bench says so.

Each gets its own data directory, provider key and unified key, set up through freellm's
command line as a user would (``keys add``, ``token``, ``serve``). The bench checks which code
each server runs: before it starts, the same Python, environment and directory must import
``freellm`` from under the build's ``src``; once it serves, ``/proc/<pid>/cmdline`` and
``/proc/<pid>/environ`` must show ``-m freellm.cli`` and the build's ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import attrs

from _load import Endpoint
from _procs import (
    Children,
    Flavor,
    config_text,
    http_request,
    proc_strings,
    run_cli,
    taskset,
    wait_for_output,
)

REPO: Final = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S: Final = 20.0
WHERE: Final = "import freellm, freellm.cli; print(freellm.__file__)"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


@attrs.frozen
class Build:
    """The code one freellm server runs: the ``freellm`` package under ``src``."""

    name: str  # "freellm" (the working tree) or "baseline"
    label: str  # what a reader is told it is
    src: Path
    pythonpath: str

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "freellm.cli"]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env["PYTHONPATH"] = self.pythonpath
        return env


def working_tree() -> Build:
    """This repository's ``src``, as it is now (uncommitted changes included)."""
    head = _git("rev-parse", "--short=10", "HEAD")
    changed = bool(_git("status", "--porcelain", "--", "src"))
    label = f"working tree (HEAD {head}{' + uncommitted changes in src/' if changed else ''})"
    return Build("freellm", label, REPO / "src", str(REPO / "src"))


@contextlib.contextmanager
def baseline_worktree(ref: str, parent: Path, log: Callable[[str], None]) -> Iterator[Build]:
    """``ref`` checked out (detached) in a git worktree under ``parent``, removed on exit.

    Raises ``RuntimeError`` if ``ref`` names no commit or git cannot add the worktree.
    """
    sha = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    path = parent / f"baseline-{sha[:10]}"
    try:
        _git("worktree", "add", "--detach", str(path), sha)
        log(f"baseline {ref} = {sha[:10]} checked out in {path}")
        yield Build("baseline", f"{ref} ({sha[:10]})", path / "src", str(path / "src"))
    finally:
        # Best effort, in this order: an interrupted `worktree add` may have left either half.
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)


@attrs.frozen
class Instance:
    """One running freellm: its build, where to reach it, and what it was seen to run."""

    build: Build
    endpoint: Endpoint
    pid: int
    package: str  # freellm.__file__ as the build's Python imports it
    pythonpath: str | None  # from /proc/<pid>/environ

    @property
    def name(self) -> str:
        return self.build.name


def start_freellm(
    build: Build,
    flavor: Flavor,
    base_url: str,
    workdir: Path,
    children: Children,
    *,
    env: Mapping[str, str],
    cpu: int | None,
    log: Callable[[str], None],
) -> Instance:
    """``build`` set up in front of ``base_url`` (its own data dir, key and unified key), served
    on a free port, ready, and checked to run the build's code.

    Raises ``RuntimeError`` if a command fails, the server never gets ready, or it runs other code.
    """
    home = workdir / build.name
    home.mkdir()
    config = home / "freellm.toml"
    config.write_text(config_text(flavor, base_url))
    common = ["--data-dir", str(home / "data"), "--config", str(config)]
    build_env = build.env(env)
    python = build.command

    # Compile stale bytecode first: compiling at start-up would inflate the idle RSS. (A file
    # that does not compile fails below, with freellm's own message.)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(build.src)],
        env=build_env,
        capture_output=True,
        check=False,
    )
    package = run_cli([sys.executable, "-c", WHERE], build_env, cwd=home).strip()
    if not Path(package).resolve().is_relative_to(build.src.resolve()):
        raise RuntimeError(f"{build.name}: imports freellm from {package}, not {build.src}")

    secret = f"sk-bench-upstream-{build.name}"
    run_cli([*python, "keys", "add", flavor.provider, secret, *common], build_env, cwd=home)
    unified_key = run_cli([*python, "token", *common], build_env, cwd=home).strip()

    out = home / "serve.log"
    argv = [*taskset(cpu is not None, cpu or 0), *python, "serve", *common, "--host", "127.0.0.1"]
    server = children.spawn([*argv, "--port", "0"], output=out, env=build_env, cwd=home)
    url = wait_for_output(server, out, r"serving (http://\S+)/v1\s*$", STARTUP_TIMEOUT_S)[1]
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while http_request(f"{url}/readyz")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{build.name} never became ready")
        time.sleep(0.05)

    cmdline = proc_strings(server.pid, "cmdline")
    environ = dict(e.partition("=")[::2] for e in proc_strings(server.pid, "environ"))
    pythonpath = environ.get("PYTHONPATH")
    if cmdline[1:3] != ["-m", "freellm.cli"] or pythonpath != build.pythonpath:
        raise RuntimeError(
            f"{build.name} (pid {server.pid}) runs {cmdline} with PYTHONPATH={pythonpath!r},"
            f" not PYTHONPATH={build.pythonpath!r}"
        )
    endpoint = Endpoint(build.name, f"{url}/v1/chat/completions", unified_key, "auto")
    log(f"{build.name} serving at {url} (pid {server.pid}), freellm from {package}")
    return Instance(build, endpoint, server.pid, package, pythonpath)


def clean_environ(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without what would make freellm read another config or listen elsewhere."""
    env = dict(base, PYTHONUNBUFFERED="1")
    for name in ("HOST", "PORT", "FREELLM_DATA_DIR", "PYTHONPATH"):
        env.pop(name, None)
    return env
