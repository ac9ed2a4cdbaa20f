"""Cut the test slices from the shared traces (run by hand; the tests never need the originals):

    .venv/bin/python tests/data/traces/cut_slices.py ../shared/data/traces

Azure: the header and every row of the first 15 minutes (a prefix of the file). Mooncake: every
row of the conversations (as :func:`freellm.sim.trace.parse_mooncake` finds them) that start in
the file's first rows, as many first rows as keep the slice under 300,000 bytes. Rows are the
original lines, byte for byte, in their original order.
"""

from __future__ import annotations

import sys
from pathlib import Path

from freellm.sim.trace import parse_azure, parse_mooncake

HERE = Path(__file__).parent
AZURE_SECONDS = 15 * 60
MOONCAKE_BYTES = 300_000


def azure(lines: list[str]) -> list[str]:
    trace = parse_azure(lines)  # in file order: the trace's times are sorted
    kept = sum(request.at < AZURE_SECONDS for request in trace.requests)
    return lines[: 1 + kept]


def mooncake(lines: list[str]) -> list[str]:
    # The importer sorts rows stably by time; these files are in time order, so row i is line i.
    conversations = [request.conversation for request in parse_mooncake(lines).requests]

    def cut(first_rows: int) -> list[str]:
        chosen = set(conversations[:first_rows])
        return [line for line, c in zip(lines, conversations, strict=True) if c in chosen]

    lo, hi = 1, len(lines)  # the largest first_rows whose slice fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(len(line.encode()) for line in cut(mid)) <= MOONCAKE_BYTES:
            lo = mid
        else:
            hi = mid - 1
    return cut(lo)


def main(shared: Path) -> None:
    for name, slicer in (
        ("azure_llm_2023_conv.csv", azure),
        ("azure_llm_2023_code.csv", azure),
        ("mooncake_conversation.jsonl", mooncake),
        ("mooncake_synthetic.jsonl", mooncake),
    ):
        lines = (shared / name).read_bytes().decode().splitlines(keepends=True)
        kept = slicer(lines)
        (HERE / name).write_bytes("".join(kept).encode())
        print(f"{name}: {len(kept)} lines, {sum(len(line.encode()) for line in kept)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
