"""Vendored front-end files are whole, pinned copies: each matches the hash its README gives,
each library has its licence beside it, and nothing unlisted sits in a vendor folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
VENDOR_DIRS = [ROOT / "src/freellm/web/static/vendor", ROOT / "tests/e2e/vendor"]
ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", re.MULTILINE)


@pytest.mark.parametrize("folder", VENDOR_DIRS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_vendored_file_is_listed_with_its_size_and_hash(folder: Path) -> None:
    listed = {
        name: (int(size), digest)
        for name, size, digest in ROW.findall((folder / "README.md").read_text(encoding="utf-8"))
    }
    present = {
        str(path.relative_to(folder)): path
        for path in folder.rglob("*")
        if path.is_file() and path.name != "README.md"
    }
    assert set(listed) == set(present)
    for name, path in present.items():
        data = path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == listed[name], name
    libraries = {name.split("/")[0] for name in present}
    for library in libraries:
        assert any(n.startswith(f"{library}/LICENSE") for n in present), library
