"""The rows of a batch as a client sends them (JSON objects or a CSV file), checked against
their template before anything is recorded: each row's key, its values as text, and the script
it fills in or the reason it cannot become a video.

A row's key is the client's `row_key` (or `key`) when given, otherwise a hash of the template
and the row's values, so the same row sent again (as JSON or CSV alike) has the same key.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from collections.abc import Mapping, Sequence

import msgspec

from doppel.domain import templates
from doppel.errors import InvalidRequest

#: Rows in one batch: a bigger mailing is several batches (each row is a queued render job).
MAX_ROWS = 1000
MAX_KEY = 200
#: Fields of a row that name its key rather than a variable (`key` only where the template has
#: no variable of that name).
KEY_FIELDS = ("row_key", "key")


@dataclasses.dataclass(frozen=True)
class PlannedRow:
    """A submitted row, checked: `script` to speak, or `error` saying why there is none."""

    row_index: int
    row_key: str
    variables: dict[str, str]
    script: str | None
    error: str | None


def rows_from_csv(data: bytes) -> list[dict[str, str]]:
    """The rows of a CSV file whose header row names the variables (and optionally `row_key`).

    UTF-8 (a byte order mark is skipped); blank lines are skipped. Anything malformed is an
    `InvalidRequest` naming the line, since a person will open the file to fix it.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidRequest(
            f"rows_csv is not UTF-8 text (line {line}, byte {exc.start}): save it as UTF-8 CSV."
        ) from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next((r for r in reader if r), None)
        if header is None:
            raise InvalidRequest(
                "rows_csv is empty: send a header row of variable names, then rows."
            )
        names = [h.strip() for h in header]
        for i, name in enumerate(names):
            if not name:
                raise InvalidRequest(
                    f"rows_csv line {reader.line_num}: column {i + 1} has no name."
                )
            if names.index(name) != i:
                raise InvalidRequest(f"rows_csv line {reader.line_num}: column {name!r} is twice.")
        rows = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(names):
                raise InvalidRequest(
                    f"rows_csv line {reader.line_num} has {len(record)} fields; the header has "
                    f"{len(names)}. Quote values that hold commas."
                )
            rows.append(dict(zip(names, record, strict=True)))
    except csv.Error as exc:
        raise InvalidRequest(
            f"rows_csv is not valid CSV at line {reader.line_num}: {exc}."
        ) from exc
    return rows


def _split(index: int, raw: object, names: Sequence[str]) -> tuple[str | None, dict[str, object]]:
    """(the client's key, the row's values) of a submitted row. A row may be flat
    (`{"first_name": "Ann", "row_key": "a1"}`) or nest its values
    (`{"variables": {...}, "row_key": "a1"}`).
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"Row {index} is not an object of variable values.")
    values = dict(raw)
    key: object = None
    for field in KEY_FIELDS:
        if field in values and field not in names:
            key = values.pop(field)
            break
    nested = values.get("variables")
    if isinstance(nested, Mapping) and "variables" not in names:
        values = {**{k: v for k, v in values.items() if k != "variables"}, **nested}
    if key is None:
        return None, values
    if isinstance(key, bool) or not isinstance(key, str | int) or not str(key).strip():
        raise InvalidRequest(f"Row {index}: row_key must be a non-empty text or number.")
    if len(str(key).strip()) > MAX_KEY:
        raise InvalidRequest(f"Row {index}: row_key is longer than {MAX_KEY} characters.")
    return str(key).strip(), values


def auto_key(template_id: str, variables: Mapping[str, str]) -> str:
    blob = template_id.encode() + b"\0" + msgspec.json.encode(variables, order="sorted")
    return hashlib.sha256(blob).hexdigest()[:32]


def plan(template: templates.TemplateRow, rows: Sequence[object]) -> list[PlannedRow]:
    """Check every row (1-based): a whole-batch `InvalidRequest` for what makes the batch
    itself wrong (no rows, too many, a malformed row or key, two rows with one key); a row
    error for what only that row gets wrong.
    """
    if not rows:
        raise InvalidRequest(
            "Send at least one row of variable values (JSON `rows`, or lines after the CSV "
            "header row)."
        )
    if len(rows) > MAX_ROWS:
        raise InvalidRequest(
            f"The batch has {len(rows)} rows; one batch takes at most {MAX_ROWS}. Split it."
        )
    planned: list[PlannedRow] = []
    first_of: dict[str, int] = {}
    for index, raw in enumerate(rows, start=1):
        given, values = _split(index, raw, template.variables)
        variables, _ = templates.as_text(values)
        key = given or auto_key(template.template_id, variables)
        if key in first_of:
            raise InvalidRequest(
                f"Rows {first_of[key]} and {index} have the same key"
                + (f" `{key}`" if given else " (the same variable values)")
                + ": remove the repeat or give each row its own row_key."
            )
        first_of[key] = index
        script = error = None
        try:
            script = templates.script_for(template, values)
        except templates.MissingVariables as exc:
            error = f"Row {index}: {exc.short}."
        except InvalidRequest as exc:
            error = f"Row {index}: {exc.message}"
        planned.append(PlannedRow(index, key, variables, script, error))
    return planned


def batch_key(template_id: str, planned: Sequence[PlannedRow]) -> str:
    content = [[p.row_key, p.variables] for p in planned]
    blob = template_id.encode() + b"\0" + msgspec.json.encode(content, order="sorted")
    return hashlib.sha256(blob).hexdigest()
