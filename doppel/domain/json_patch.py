"""JSON Patch (RFC 6902) on a persona's document: how Tavus clients edit a persona.

Only add, remove, replace and test; the messages name the failing operation by its index, for
the person who wrote the patch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from doppel.errors import InvalidRequest


def _pointer(path: object, i: int) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidRequest(
            f"Patch operation {i}: `path` must be a JSON Pointer such as /context."
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: Sequence[str], i: int) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise InvalidRequest(
                f"Patch operation {i}: /{'/'.join(parts)} does not exist in the persona."
            )
    return node


def apply(doc: dict[str, Any], ops: object, editable: Sequence[str]) -> dict[str, Any]:
    """`doc` after the JSON Patch operations `ops` (add, remove, replace, test) on its
    `editable` top-level fields, all or nothing: the first that cannot apply is named and the
    document is left as it was.
    """
    if not isinstance(ops, list) or not ops:
        raise InvalidRequest(
            'Send a JSON Patch: a list of operations such as [{"op": "replace", '
            '"path": "/context", "value": "..."}].'
        )
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise InvalidRequest(f"Patch operation {i} must be an object with `op` and `path`.")
        kind = op.get("op")
        parts = _pointer(op.get("path"), i)
        if parts[0] not in editable:
            raise InvalidRequest(
                f"Patch operation {i}: /{parts[0]} cannot be changed; the editable fields are "
                f"{list(editable)}."
            )
        if kind in ("add", "replace", "test") and "value" not in op:
            raise InvalidRequest(f"Patch operation {i} ({kind}) has no `value`.")
        parent, last = _parent(out, parts, i), parts[-1]
        if kind == "test":
            current = _child(parent, last, i, parts)
            if current != op["value"]:
                raise InvalidRequest(f"Patch operation {i}: test failed at {op['path']}.")
        elif kind == "remove":
            _child(parent, last, i, parts)
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        elif kind == "replace":
            _child(parent, last, i, parts)
            parent[int(last) if isinstance(parent, list) else last] = op["value"]
        elif kind == "add":
            if isinstance(parent, list):
                at = len(parent) if last == "-" else _index(parent, last, i, parts, insert=True)
                parent.insert(at, op["value"])
            elif isinstance(parent, dict):
                parent[last] = op["value"]
            else:
                raise InvalidRequest(f"Patch operation {i}: {op['path']} is inside a value.")
        else:
            raise InvalidRequest(
                f"Patch operation {i}: `op` {kind!r} is not supported; use add, remove, "
                "replace or test."
            )
    return out


def _index(parent: list[Any], last: str, i: int, parts: Sequence[str], insert: bool) -> int:
    limit = len(parent) + (1 if insert else 0)
    if not last.isdigit() or int(last) >= limit:
        raise InvalidRequest(f"Patch operation {i}: /{'/'.join(parts)} is out of range.")
    return int(last)


def _child(parent: Any, last: str, i: int, parts: Sequence[str]) -> Any:
    if isinstance(parent, list):
        return parent[_index(parent, last, i, parts, insert=False)]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    raise InvalidRequest(f"Patch operation {i}: /{'/'.join(parts)} does not exist in the persona.")
