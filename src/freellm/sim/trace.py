"""Recorded traffic as traces: freellm's own trace format, importers for public traces, and this
instance's request log as a trace. ``freellm replay`` reads traces; ``freellm export-trace``
writes them.

A trace holds shapes only: when each request arrived and how large it was, never any text.

The format (freellm's own, JSON lines)
--------------------------------------
The first line is a header, then one object per request, in order of arrival::

    {"freellm_trace":1,"source":"azure_llm_2023_conv.csv","requests":2}
    {"at":0.0,"prompt_tokens":374,"completion_tokens":44}
    {"at":4.314579,"conversation":"c1","prompt_tokens":396,"completion_tokens":109,"tools":true}

- ``at``: seconds from the trace's start (a number >= 0, never decreasing from line to line);
- ``conversation``: the conversation the request belongs to (a string), or null: a request on
  its own;
- ``prompt_tokens``, ``completion_tokens``: whole numbers >= 0;
- ``max_tokens``: the completion budget the client asked for, or null (none asked);
- ``tools``, ``images``, ``json``: whether it carried tools, images, asked for JSON mode;
- ``model``: what the client asked for (``auto``, a model id or ``provider/model``).

A key left out takes its default (``conversation`` null, ``max_tokens`` null, flags false,
``model`` ``"auto"``), and :func:`dump_trace` leaves defaults out, so lines stay short. Unknown
keys, a count that disagrees with the header, and times out of order are errors.

The importers
-------------
Each reads text (or lines) and returns a :class:`Trace` whose ``at`` counts from its earliest
request; rows out of order are sorted (stably) by time. Blank lines are skipped; any other row
that cannot be read raises :class:`TraceError` naming its line and field: no row is dropped.

- ``azure``: the Azure LLM inference trace 2023, ``TIMESTAMP,ContextTokens,GeneratedTokens``
  (UTC wall clock, 7 fractional digits). Every request is a conversation of its own (null).
- ``mooncake``: Mooncake's JSON lines, ``timestamp`` (ms), ``input_length``, ``output_length``
  and ``hash_ids`` (the prompt's 512-token blocks). A row whose ``hash_ids`` extend an earlier
  row's joins that row's conversation, the deepest such row winning; any other row starts a
  conversation. "Extend" is read on the earlier row's *full* blocks: its last block is usually
  partial, and its hash changes as the conversation grows (matching whole lists finds almost no
  conversation: 130 of 12,031 rows). And the match must go past the first block, which nearly
  every row shares (a common system prompt: matching on it alone makes one conversation of the
  whole trace). So a row joins an earlier one when that row's list without its last block has
  at least :data:`MOONCAKE_MIN_BLOCKS` blocks and is a prefix of this row's list: on the public
  conversation trace, 12,031 rows make 8,057 conversations. Conversations are named ``c1``,
  ``c2``, ... in order of first appearance. A row with fewer hash ids is a conversation of its
  own that no row extends. Other keys are ignored.
- ``csv:MAPPING``: any CSV with a header line, given which column holds what::

      csv:at=COL,prompt=COL,completion=COL[,conversation=COL][,model=COL][,time=s|ms|iso]

  ``COL`` is a header name (spaces around it are ignored; it cannot hold ``,`` or ``=``).
  ``time`` is the unit of the ``at`` column: seconds (the default), milliseconds, or ``iso``
  wall-clock times (``2023-11-16 18:15:46.6805900``, ``T`` or a space, 0 to 9 fractional
  digits, an optional ``Z`` or ``+HH:MM`` zone: times without one are taken as UTC). An empty
  ``conversation`` cell is null, an empty ``model`` cell ``auto``.
- ``freellm``: the format above (:func:`parse_freellm`; :func:`dump_trace` writes it, and
  ``parse_freellm(dump_trace(t)) == t``).

Error tree::

    ValueError
    └── TraceError  a trace, a --format, a csv mapping or a --since that cannot be read; the
                    message names the line (counting from 1) and the field
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from bisect import bisect_left
from collections.abc import Iterable
from datetime import date
from functools import lru_cache
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from freellm.shell.store import RequestRecord

__all__ = [
    "AZURE",
    "FORMATS",
    "CsvMapping",
    "Trace",
    "TraceError",
    "TraceRequest",
    "detect_format",
    "dump_trace",
    "load_trace",
    "parse_azure",
    "parse_csv",
    "parse_freellm",
    "parse_mooncake",
    "parse_since",
    "parse_trace",
    "trace_from_log",
]

FORMATS: Final = ("azure", "mooncake", "freellm", "csv:MAPPING")
VERSION: Final = 1


class TraceError(ValueError):
    """Input this module cannot read. ``path``, ``line`` (from 1) and ``field`` say where, when
    known, and lead the message; ``reason`` is the rest."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        path: Path | None = None,
    ) -> None:
        self.reason = message
        self.line = line
        self.field = field
        self.path = path
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(field)
        super().__init__(": ".join([*where, message]))


# --- values -------------------------------------------------------------------------------------


@attrs.frozen(weakref_slot=False)
class TraceRequest:
    """One request of a trace (the module docstring says what each field means). Unchecked:
    made ~20k times per replay, so the parsers check their input instead."""

    at: float
    prompt_tokens: int
    completion_tokens: int
    conversation: str | None = None
    max_tokens: int | None = None
    tools: bool = False
    images: bool = False
    json: bool = False
    model: str = "auto"


def _in_order(_instance: object, _attribute: object, requests: tuple[TraceRequest, ...]) -> None:
    previous = 0.0
    for index, request in enumerate(requests):
        if not request.at >= previous:  # NaN fails this too
            raise ValueError(
                f"requests[{index}].at = {request.at!r}: times must be >= 0 and never decrease"
            )
        previous = request.at
    if math.isinf(previous):
        raise ValueError("times must be finite")


@attrs.frozen(weakref_slot=False)
class Trace:
    """Requests in order of arrival (``at`` >= 0, never decreasing: ``ValueError`` otherwise),
    and where they came from (with notes on how they were cut or filled in)."""

    requests: tuple[TraceRequest, ...] = attrs.field(validator=_in_order)
    source: str

    @property
    def duration(self) -> float:
        """Seconds from the trace's start to its last request (0 when empty)."""
        return self.requests[-1].at if self.requests else 0.0

    @property
    def conversations(self) -> int:
        """How many conversations: each named one once, each request without one on its own."""
        named = {r.conversation for r in self.requests if r.conversation is not None}
        return len(named) + sum(r.conversation is None for r in self.requests)

    def window(self, start_s: float, end_s: float) -> Trace:
        """The requests with ``start_s <= at < end_s``, their times counted from ``start_s``.

        Raises ``ValueError`` unless ``0 <= start_s <= end_s``.
        """
        if not 0 <= start_s <= end_s:
            raise ValueError(f"a window needs 0 <= start <= end, got {start_s!r}, {end_s!r}")
        at = attrgetter("at")
        lo = bisect_left(self.requests, start_s, key=at)
        hi = bisect_left(self.requests, end_s, key=at)
        return Trace(
            tuple(attrs.evolve(r, at=r.at - start_s) for r in self.requests[lo:hi]),
            f"{self.source}, {start_s:g}-{end_s:g} s",
        )

    def head(self, n: int) -> Trace:
        """The first ``n`` requests. Raises ``ValueError`` for ``n < 0``."""
        if n < 0:
            raise ValueError(f"head needs n >= 0, got {n}")
        return Trace(self.requests[:n], f"{self.source}, first {n}")

    def subsample(self, fraction: float, seed: int) -> Trace:
        """About ``fraction`` of the conversations, whole, at their times; a request without a
        conversation is one of its own.

        A conversation is kept when a hash of ``seed`` and its name (a request without one: its
        place in the trace) falls below ``fraction``: the same seed keeps the same ones, and a
        larger fraction keeps a superset. Raises ``ValueError`` unless ``0 <= fraction <= 1``.
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"a fraction is between 0 and 1, got {fraction!r}")
        threshold = fraction * 2**64
        decided: dict[str, bool] = {}
        kept = []
        for index, request in enumerate(self.requests):
            name = request.conversation
            if name is None:
                keep = _draw(seed, f"r:{index}") < threshold
            elif name in decided:
                keep = decided[name]
            else:
                keep = decided[name] = _draw(seed, f"c:{name}") < threshold
            if keep:
                kept.append(request)
        return Trace(tuple(kept), f"{self.source}, {fraction:g} of it (seed {seed})")

    def repeat(self, times: int) -> Trace:
        """The trace ``times`` times in a row: each copy starts a minute after the previous
        one's last request, its conversations renamed (``name~2``), so that a short trace fills
        the day windows as longer traffic would (Mooncake's synthetic trace lasts 17 minutes: in
        one pass, day caps that bind over an hour do not). Raises ``ValueError`` unless
        ``times >= 1``."""
        if times < 1:
            raise ValueError(f"repeat needs times >= 1, got {times!r}")
        if times == 1:
            return self
        step = self.duration + 60.0
        copies = [
            attrs.evolve(
                request,
                at=request.at + copy * step,
                conversation=None
                if request.conversation is None
                else f"{request.conversation}~{copy + 1}",
            )
            for copy in range(1, times)
            for request in self.requests
        ]
        return Trace((*self.requests, *copies), f"{self.source}, {times} times in a row")


def _draw(seed: int, unit: str) -> int:
    data = f"{seed}:{unit}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# --- shared by the importers --------------------------------------------------------------------


def _lines(text: str | Iterable[str]) -> Iterable[str]:
    # newline="": split on \n, \r\n or \r only (str.splitlines also splits on \u2028 and the
    # like, which JSON strings may hold raw); the csv module wants the endings kept.
    return io.StringIO(text, newline="") if isinstance(text, str) else text


Row = tuple[float | int, int, int, str | None, str]  # time, prompt, completion, conversation, model


def _from_rows(rows: list[Row], per_second: int, source: str) -> Trace:
    """A trace of rows timed in ``1 / per_second`` units from any origin: sorted by time
    (stably), from the earliest."""
    rows.sort(key=lambda row: row[0])
    start = rows[0][0] if rows else 0
    return Trace(
        tuple(
            TraceRequest((t - start) / per_second, prompt, completion, conversation, model=model)
            for t, prompt, completion, conversation, model in rows
        ),
        source,
    )


def _count(value: object, line: int, field: str) -> int:
    if type(value) is int and value >= 0:
        return value
    raise TraceError(f"expected a whole number >= 0, got {value!r}", line=line, field=field)


def _json_object(text: str, line: int) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:  # JSONDecodeError, or a number too long to convert
        raise TraceError(f"not JSON: {error}", line=line) from None
    if not isinstance(value, dict):
        raise TraceError(f"expected a JSON object, got {text.strip()[:40]!r}", line=line)
    return value


def _finite(value: object, line: int, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise TraceError(f"expected a finite number, got {value!r}", line=line, field=field)


# --- wall-clock times ---------------------------------------------------------------------------

_ISO: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9})\d*)?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
_EPOCH: Final = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=64)
def _epoch_day(year: str, month: str, day: str) -> int:
    return date(int(year), int(month), int(day)).toordinal() - _EPOCH


def _iso_ns(text: str) -> int:
    """Nanoseconds since the epoch of an ISO-8601 time (UTC unless it names a zone; digits
    past the ninth fractional one are dropped). Raises ``ValueError`` for anything else."""
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    year, month, day, hours, minutes, seconds, fraction, zone = match.groups()
    h, m, s = int(hours or 0), int(minutes or 0), int(seconds or 0)
    if h > 23 or m > 59 or s > 59:
        raise ValueError(text)
    total = _epoch_day(year, month, day) * 86_400 + h * 3_600 + m * 60 + s
    if zone and zone != "Z":
        offset = int(zone[1:3]) * 3_600 + int(zone[-2:]) * 60
        total += -offset if zone[0] == "+" else offset
    return total * 1_000_000_000 + (int(fraction.ljust(9, "0")) if fraction else 0)


# --- CSV ----------------------------------------------------------------------------------------

_TIME_UNITS: Final = {"s": 1, "ms": 1_000, "iso": 1_000_000_000}


@attrs.frozen
class CsvMapping:
    """Which CSV column holds what (header names), and the unit of the ``at`` column."""

    at: str
    prompt: str
    completion: str
    conversation: str | None = None
    model: str | None = None
    time: str = "s"  # s | ms | iso

    @classmethod
    def parse(cls, text: str) -> CsvMapping:
        """``[csv:]at=COL,prompt=COL,completion=COL[,conversation=COL][,model=COL][,time=U]``.

        Raises :class:`TraceError` naming the part that is wrong.
        """
        body = text.removeprefix("csv:")
        names = [field.name for field in attrs.fields(cls)]
        given: dict[str, str] = {}
        for part in body.split(","):
            key, equals, value = (piece.strip() for piece in part.partition("="))
            if not equals or not value or key not in names or key in given:
                problem = (
                    f"{key!r} twice"
                    if key in given
                    else f"expected KEY=COLUMN with KEY one of {', '.join(names)}, got {part!r}"
                )
                raise TraceError(problem, field=f"csv mapping {text!r}")
            given[key] = value
        missing = [key for key in ("at", "prompt", "completion") if key not in given]
        if missing:
            raise TraceError(f"{', '.join(missing)} missing", field=f"csv mapping {text!r}")
        if given.get("time", "s") not in _TIME_UNITS:
            raise TraceError(
                f"time={given['time']}: expected s, ms or iso", field=f"csv mapping {text!r}"
            )
        return cls(**given)


AZURE: Final = CsvMapping("TIMESTAMP", "ContextTokens", "GeneratedTokens", time="iso")
"""The Azure LLM inference trace 2023's columns."""


def parse_csv(
    text: str | Iterable[str], mapping: CsvMapping | str, *, source: str = "csv"
) -> Trace:
    """A CSV with a header line, read through ``mapping`` (a :class:`CsvMapping` or its text).

    Raises :class:`TraceError` for a column the header lacks, a row whose number of fields is
    not the header's, and a cell that is not what its column holds.
    """
    if isinstance(mapping, str):
        mapping = CsvMapping.parse(mapping)
    reader = csv.reader(_lines(text), strict=True)
    try:
        header = next((row for row in reader if row), None)
        if header is None:
            raise TraceError("the CSV is empty: expected a header line")
        columns = {name.strip(): index for index, name in enumerate(header)}

        def column(name: str, key: str) -> int:
            if name not in columns:
                raise TraceError(
                    f"no column {name!r} (for {key}=); the header has {', '.join(columns)}",
                    line=reader.line_num,
                )
            return columns[name]

        at = column(mapping.at, "at")
        prompt = column(mapping.prompt, "prompt")
        completion = column(mapping.completion, "completion")
        conversation = (
            None if mapping.conversation is None else column(mapping.conversation, "conversation")
        )
        model = None if mapping.model is None else column(mapping.model, "model")
        per_second = _TIME_UNITS[mapping.time]
        when = _iso_ns if mapping.time == "iso" else float
        rows: list[Row] = []
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                raise TraceError(f"{len(row)} fields, the header has {len(header)}", line=line)
            try:
                t = when(row[at])
            except ValueError:
                t = math.nan
            if not math.isfinite(t):
                expected = "an ISO-8601 time" if mapping.time == "iso" else "a finite number"
                raise TraceError(
                    f"expected {expected}, got {row[at]!r}", line=line, field=header[at]
                )
            rows.append(
                (
                    t,
                    _cell_count(row[prompt], line, header[prompt]),
                    _cell_count(row[completion], line, header[completion]),
                    None if conversation is None else row[conversation].strip() or None,
                    "auto" if model is None else row[model].strip() or "auto",
                )
            )
    except csv.Error as error:
        raise TraceError(f"not CSV: {error}", line=reader.line_num) from None
    return _from_rows(rows, per_second, source)


def _cell_count(text: str, line: int, field: str) -> int:
    stripped = text.strip()
    if stripped.isascii() and stripped.isdigit():
        return int(stripped)
    raise TraceError(f"expected a whole number >= 0, got {text!r}", line=line, field=field)


def parse_azure(text: str | Iterable[str], *, source: str = "azure") -> Trace:
    """The Azure LLM inference trace 2023 (:data:`AZURE`'s columns); see :func:`parse_csv`."""
    return parse_csv(text, AZURE, source=source)


# --- Mooncake -----------------------------------------------------------------------------------

MOONCAKE_MIN_BLOCKS: Final = 2
"""Full blocks a row must share with an earlier one to continue its conversation."""


def parse_mooncake(text: str | Iterable[str], *, source: str = "mooncake") -> Trace:
    """Mooncake's JSON lines, conversations found by prefix (see the module docstring).

    A trie over hash ids: each row walks its path once, so the work is linear in the hash ids.
    Nodes are numbered, their children kept in one dict keyed by ``(node, hash id)`` (one dict
    per node would cost far more memory), and a node where some row's list ends holds that
    row's conversation. Raises :class:`TraceError` for a row that cannot be read.
    """
    children: dict[tuple[int, int], int] = {}
    ends: dict[int, str] = {}
    named = 0
    rows: list[Row] = []
    for line, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        row = _json_object(raw, line)
        t = _finite(row.get("timestamp"), line, "timestamp")
        prompt = _count(row.get("input_length"), line, "input_length")
        completion = _count(row.get("output_length"), line, "output_length")
        hash_ids = row.get("hash_ids")
        if not isinstance(hash_ids, list):
            raise TraceError(f"expected a list, got {hash_ids!r}", line=line, field="hash_ids")
        node = 0
        conversation = None
        full = len(hash_ids) - 1  # this row's full blocks: later rows may extend these
        mark = 0  # the node where they end, if there are enough of them
        for depth, hash_id in enumerate(hash_ids, start=1):
            if type(hash_id) is not int:
                raise TraceError(
                    f"expected whole numbers, got {hash_id!r}", line=line, field="hash_ids"
                )
            child = children.get((node, hash_id))
            if child is None:
                child = children[node, hash_id] = len(children) + 1
            node = child
            if depth >= MOONCAKE_MIN_BLOCKS:
                conversation = ends.get(node, conversation)
            if depth == full and full >= MOONCAKE_MIN_BLOCKS:
                mark = node
        if conversation is None:
            named += 1
            conversation = f"c{named}"
        if mark:
            ends.setdefault(mark, conversation)
        rows.append((t, prompt, completion, conversation, "auto"))
    return _from_rows(rows, 1_000, source)


# --- freellm's own ------------------------------------------------------------------------------

_DEFAULTS: Final = {
    f.name: f.default for f in attrs.fields(TraceRequest) if f.default is not attrs.NOTHING
}
_HEADER: Final = ("freellm_trace", "source", "requests")


def parse_freellm(text: str | Iterable[str]) -> Trace:
    """freellm's own format (the module docstring); the source is the header's.

    Raises :class:`TraceError` for a missing or unknown header, unknown keys, values of the
    wrong type, times out of order, and a number of requests other than the header's.
    """
    header: dict[str, Any] | None = None
    requests: list[TraceRequest] = []
    previous = 0.0
    line = 0
    for line, raw in enumerate(_lines(text), start=1):
        if not raw.strip():
            continue
        row = _json_object(raw, line)
        if header is None:
            header = _header(row, line)
            continue
        unknown = row.keys() - _DEFAULTS.keys() - {"at", "prompt_tokens", "completion_tokens"}
        if unknown:
            raise TraceError("unknown key", line=line, field=sorted(unknown)[0])
        at = _finite(row.get("at"), line, "at")
        if not at >= previous:
            raise TraceError(
                f"{at!r} comes before {previous!r}: requests must be in order of arrival, from 0",
                line=line,
                field="at",
            )
        previous = at
        conversation = row.get("conversation")
        if conversation is not None and not isinstance(conversation, str):
            raise TraceError(
                f"expected a string or null, got {conversation!r}", line=line, field="conversation"
            )
        max_tokens = row.get("max_tokens")
        tools, images, json_mode = (_flag(row, flag, line) for flag in ("tools", "images", "json"))
        model = row.get("model", "auto")
        if not isinstance(model, str) or not model:
            raise TraceError(f"expected a model name, got {model!r}", line=line, field="model")
        requests.append(
            TraceRequest(
                float(at),
                _count(row.get("prompt_tokens"), line, "prompt_tokens"),
                _count(row.get("completion_tokens"), line, "completion_tokens"),
                conversation,
                None if max_tokens is None else _count(max_tokens, line, "max_tokens"),
                tools,
                images,
                json_mode,
                model,
            )
        )
    if header is None:
        raise TraceError('empty: expected a header {"freellm_trace": 1, ...}', line=max(line, 1))
    if len(requests) != header["requests"]:
        raise TraceError(
            f"{len(requests)} requests, the header says {header['requests']}", line=line
        )
    return Trace(tuple(requests), header["source"])


def _flag(row: dict[str, Any], flag: str, line: int) -> bool:
    value = row.get(flag, False)
    if isinstance(value, bool):
        return value
    raise TraceError(f"expected true or false, got {value!r}", line=line, field=flag)


def _header(row: dict[str, Any], line: int) -> dict[str, Any]:
    if "freellm_trace" not in row:
        raise TraceError('expected the header {"freellm_trace": 1, ...}', line=line)
    if row["freellm_trace"] != VERSION or isinstance(row["freellm_trace"], bool):
        raise TraceError(
            f"version {row['freellm_trace']!r}: this freellm reads version {VERSION}",
            line=line,
            field="freellm_trace",
        )
    unknown = row.keys() - set(_HEADER)
    if unknown:
        raise TraceError("unknown key", line=line, field=sorted(unknown)[0])
    if not isinstance(row.get("source"), str):
        raise TraceError(f"expected a string, got {row.get('source')!r}", line=line, field="source")
    _count(row.get("requests"), line, "requests")
    return row


def _encode(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


def dump_trace(trace: Trace) -> str:
    """The trace in freellm's format, a line per request (defaults left out), ending in a
    newline."""
    lines = [
        _encode({"freellm_trace": VERSION, "source": trace.source, "requests": len(trace.requests)})
    ]
    for request in trace.requests:
        row: dict[str, Any] = {"at": request.at}
        if request.conversation is not None:
            row["conversation"] = request.conversation
        row["prompt_tokens"] = request.prompt_tokens
        row["completion_tokens"] = request.completion_tokens
        if request.max_tokens is not None:
            row["max_tokens"] = request.max_tokens
        for flag in ("tools", "images", "json"):
            if getattr(request, flag):
                row[flag] = True
        if request.model != "auto":
            row["model"] = request.model
        lines.append(_encode(row))
    return "\n".join(lines) + "\n"


# --- choosing the format ------------------------------------------------------------------------


def detect_format(first_bytes: str) -> str:
    """``azure``, ``mooncake`` or ``freellm``, from the first line of a trace (the start of the
    file is enough: a line cut short still tells). Raises :class:`TraceError` saying to pass
    ``--format`` when it is none of them."""
    first = first_bytes.lstrip("\ufeff \t\r\n").partition("\n")[0].strip()
    if first.startswith("{"):
        if '"freellm_trace"' in first:
            return "freellm"
        if all(f'"{key}"' in first for key in ("timestamp", "input_length", "output_length")):
            return "mooncake"
    elif [cell.strip().strip('"') for cell in first.split(",")] == [
        AZURE.at,
        AZURE.prompt,
        AZURE.completion,
    ]:
        return "azure"
    raise TraceError(
        f"cannot tell the trace's format from its first line {first[:60]!r}: pass --format "
        + "|".join(FORMATS),
        line=1,
    )


def parse_trace(text: str, format: str, *, source: str) -> Trace:
    """``text`` in ``format`` (one of :data:`FORMATS`, ``csv:`` with its mapping); ``source``
    names it unless the format carries its own. Raises :class:`TraceError`."""
    if format == "azure":
        return parse_azure(text, source=source)
    if format == "mooncake":
        return parse_mooncake(text, source=source)
    if format == "freellm":
        return parse_freellm(text)
    if format.startswith("csv:"):
        return parse_csv(text, format, source=source)
    raise TraceError(f"unknown format {format!r}: expected {', '.join(FORMATS)}", field="--format")


def load_trace(path: Path, format: str | None = None) -> Trace:
    """The trace in the file at ``path``, in ``format`` (:func:`detect_format` when None).

    Raises :class:`TraceError` (its message starting with the path) for a file that is not
    UTF-8 or not a trace of that format, and ``OSError`` when it cannot be read.
    """
    try:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise TraceError(f"not UTF-8 text (byte {error.start})") from None
        return parse_trace(text, format or detect_format(text[:4096]), source=path.name)
    except TraceError as error:
        raise TraceError(error.reason, line=error.line, field=error.field, path=path) from None


# --- this instance's log ------------------------------------------------------------------------


def trace_from_log(rows: Iterable[RequestRecord], *, source: str = "freellm request log") -> Trace:
    """The request log's records as a trace, timed from the first: shapes only.

    ``model`` is what the client asked for. Sessions become ``c1``, ``c2``, ... in order of
    first appearance: a session's name may be the client's own header or ``user`` value, which
    a trace must not carry. Token counts the log lacks (nothing answered) are 0, and the source
    says how many requests lacked them. The log does not keep ``max_tokens``, tools, images or
    JSON mode: they keep their defaults.
    """
    records = sorted(rows, key=attrgetter("at"))
    start = records[0].at if records else 0.0
    conversations: dict[str, str] = {}
    missing = 0
    requests = []
    for record in records:
        if record.prompt_tokens is None or record.completion_tokens is None:
            missing += 1
        conversation = None
        if record.session is not None:
            conversation = conversations.get(record.session)
            if conversation is None:
                conversation = conversations[record.session] = f"c{len(conversations) + 1}"
        requests.append(
            TraceRequest(
                record.at - start,
                record.prompt_tokens or 0,
                record.completion_tokens or 0,
                conversation,
                model=record.model,
            )
        )
    note = f", {missing} without token counts (taken as 0)" if missing else ""
    return Trace(tuple(requests), f"{source}: {len(requests)} requests{note}")


def parse_since(text: str, *, now: float) -> float:
    """The epoch time ``--since`` means: a number of days before ``now`` (``7``, ``1.5``,
    ``7d``), or an ISO-8601 date or time (``2024-05-01``, ``2024-05-01T12:00+02:00``; UTC
    unless it names a zone). Raises :class:`TraceError` for anything else."""
    value = text.strip()
    days = value.removesuffix("d").strip()
    if re.fullmatch(r"(\d+(\.\d*)?|\.\d+)", days, re.ASCII):
        return now - float(days) * 86_400
    try:
        return _iso_ns(value) / 1_000_000_000
    except ValueError:
        raise TraceError(
            f"expected a number of days (7, 1.5) or an ISO date (2024-05-01), got {text!r}",
            field="--since",
        ) from None
