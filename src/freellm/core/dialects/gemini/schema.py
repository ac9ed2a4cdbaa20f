"""JSON Schema brought to the subset Gemini's ``Schema`` accepts: :func:`clean_schema`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from freellm.core.dialects.gemini.common import is_number

_TYPES: Final[Mapping[str, str]] = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
#: The ``format`` values Gemini accepts, by type; others are refused with a 400, so dropped.
_FORMATS: Final[Mapping[str, frozenset[str]]] = {
    "STRING": frozenset({"date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
#: Numeric keywords Gemini keeps, by type: (keyword, whether it must be a whole number).
_BOUNDS: Final[Mapping[str, tuple[tuple[str, bool], ...]]] = {
    "STRING": (("minLength", True), ("maxLength", True)),
    "NUMBER": (("minimum", False), ("maximum", False)),
    "INTEGER": (("minimum", False), ("maximum", False)),
    "ARRAY": (("minItems", True), ("maxItems", True)),
    "OBJECT": (("minProperties", True), ("maxProperties", True)),
}
_MAX_DEPTH: Final = 32
_MAX_NODES: Final = 5000


def clean_schema(schema: object, *, ordering: bool = False) -> dict[str, Any]:
    """A JSON Schema brought to the subset Gemini's ``Schema`` accepts. Never raises.

    Local ``$ref``\\ s (``#/$defs/...``, ``#/definitions/...``, any JSON pointer) are inlined; a
    recursive one becomes ``{}`` at its second visit. ``allOf`` is merged, ``oneOf`` becomes
    ``anyOf``, a ``null`` type or branch becomes ``nullable``, ``const`` becomes ``enum``. Enums
    must be strings for Gemini: other enums move into the description. Types are upper-cased;
    ``properties`` imply OBJECT, ``items`` ARRAY; an ARRAY without ``items`` gets string items
    (Gemini refuses it otherwise); ``required`` keeps only declared properties. Kept keywords:
    type, format (Gemini's few), title, description, nullable, enum, properties, required, items,
    anyOf and the numeric bounds of each type; ``propertyOrdering`` is added with ``ordering``
    (for response schemas, so the JSON keeps the client's key order). Everything else, such as
    ``$schema``, ``additionalProperties``, ``default``, ``pattern`` and ``examples``, is dropped.
    """
    return _Cleaner(schema, ordering=ordering).node(schema, 0, ())


class _Cleaner:
    """One cleaning pass; the node budget bounds what inlining shared ``$ref``\\ s can grow to."""

    def __init__(self, root: object, *, ordering: bool) -> None:
        self.root = root
        self.ordering = ordering
        self.budget = _MAX_NODES

    def node(self, schema: object, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(schema, Mapping) or depth > _MAX_DEPTH or self.budget <= 0:
            return {}
        self.budget -= 1
        ref = schema.get("$ref")
        if isinstance(ref, str):
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            target = self.resolve(ref) if ref not in refs else None
            if not isinstance(target, Mapping):
                return self.node(siblings, depth + 1, refs) if siblings else {}
            return self.node({**target, **siblings}, depth + 1, (*refs, ref))
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.node(self.merge(schema, all_of, refs), depth + 1, refs)

        out: dict[str, Any] = {}
        for key in ("title", "description"):
            if isinstance(schema.get(key), str) and schema[key]:
                out[key] = schema[key]
        nullable = schema.get("nullable") is True

        raw_type = schema.get("type")
        names = raw_type if isinstance(raw_type, list) else [raw_type]
        nullable = nullable or "null" in names
        types = list(dict.fromkeys(_TYPES[n] for n in names if isinstance(n, str) and n in _TYPES))
        branches_raw = schema.get("anyOf", schema.get("oneOf"))
        if len(types) > 1:
            rest = {k: v for k, v in schema.items() if k not in ("type", "anyOf", "oneOf")}
            branches_raw = [{**rest, "type": name.lower()} for name in types]
        if isinstance(branches_raw, list) and branches_raw:
            branches = [self.node(branch, depth + 1, refs) for branch in branches_raw]
            nullable = nullable or any(branch == {"nullable": True} for branch in branches)
            branches = [branch for branch in branches if branch != {"nullable": True}]
            if len(branches) == 1:
                out = {**branches[0], **out}
            elif branches:
                out["anyOf"] = branches
            if nullable:
                out["nullable"] = True
            return out

        kind = types[0] if types else None
        values = schema.get("enum")
        if not isinstance(values, list):
            values = [schema["const"]] if "const" in schema else None
        if values is not None:
            nullable = nullable or None in values
            values = [value for value in values if value is not None]
            if values and all(isinstance(value, str) for value in values):
                kind = "STRING"  # Gemini allows enums on strings only
                out["enum"] = list(dict.fromkeys(values))
            elif values:
                allowed = ", ".join(json.dumps(value) for value in values)
                out["description"] = f"{out.get('description', '')} Allowed values: {allowed}."
                out["description"] = out["description"].strip()
        if kind is None and isinstance(schema.get("properties"), Mapping):
            kind = "OBJECT"
        if kind is None and ("items" in schema or "prefixItems" in schema):
            kind = "ARRAY"
        if kind is not None:
            out["type"] = kind
        if nullable:
            out["nullable"] = True
        if kind is None:
            return out

        form = schema.get("format")
        if isinstance(form, str) and form in _FORMATS.get(kind, ()):
            out["format"] = form
        for keyword, whole in _BOUNDS.get(kind, ()):
            bound = schema.get(keyword)
            if is_number(bound) and (not whole or (isinstance(bound, int) and bound >= 0)):
                out[keyword] = bound
        if kind == "OBJECT":
            self.properties(schema, out, depth, refs)
        elif kind == "ARRAY":
            items = schema.get("items")
            if isinstance(items, list):  # the old tuple form: any of the listed schemas
                items = {"anyOf": items} if items else None
            if not isinstance(items, Mapping) and isinstance(schema.get("prefixItems"), list):
                items = {"anyOf": schema["prefixItems"]}
            cleaned = self.node(items, depth + 1, refs) if isinstance(items, Mapping) else {}
            out["items"] = cleaned or {"type": "STRING"}
        return out

    def properties(
        self, schema: Mapping[str, Any], out: dict[str, Any], depth: int, refs: tuple[str, ...]
    ) -> None:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return
        cleaned = {
            str(name): self.node(value, depth + 1, refs) for name, value in properties.items()
        }
        out["properties"] = cleaned
        required = schema.get("required")
        if isinstance(required, list):
            names = (name for name in required if isinstance(name, str))
            kept = [name for name in dict.fromkeys(names) if name in cleaned]
            if kept:
                out["required"] = kept
        if self.ordering and len(cleaned) > 1:
            out["propertyOrdering"] = list(cleaned)

    def merge(
        self, schema: Mapping[str, Any], all_of: list[object], refs: tuple[str, ...]
    ) -> dict[str, Any]:
        """``allOf`` folded into one schema: properties and required joined, first value wins."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for branch in all_of:
            while isinstance(branch, Mapping) and isinstance(branch.get("$ref"), str):
                ref = branch["$ref"]
                target = self.resolve(ref) if ref not in refs else None
                rest = {k: v for k, v in branch.items() if k != "$ref"}
                branch = {**target, **rest} if isinstance(target, Mapping) else rest
                refs = (*refs, ref)
            if not isinstance(branch, Mapping):
                continue
            for key, value in branch.items():
                if key == "properties" and isinstance(value, Mapping):
                    mine = merged.get("properties")
                    base = dict(mine) if isinstance(mine, Mapping) else {}
                    merged["properties"] = {**value, **base}
                elif key == "required" and isinstance(value, list):
                    mine = merged.get("required")
                    base_list = list(mine) if isinstance(mine, list) else []
                    merged["required"] = base_list + value
                else:
                    merged.setdefault(key, value)
        return merged

    def resolve(self, ref: str) -> object:
        """The target of a local JSON pointer ``ref``, or ``None``."""
        if not ref.startswith("#"):
            return None
        target: object = self.root
        for token in ref[1:].split("/")[1:] if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping):
                target = target.get(token)
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                return None
        return target
