"""Templates: a replica and a script with `{{variables}}`, filled in per video.

`Hi {{ first_name }}, welcome to {{company}}!` has the variables `first_name` and `company`
(names are letters, digits and `_`, not starting with a digit; spaces inside the braces are
allowed). A template is never edited: a changed script is a new template, so a video made from
a template and its values can be recognised again (doppel.domain.batches keys rows on that).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import uuid
from collections.abc import Mapping

import asyncpg
import msgspec

from doppel.domain import replicas, videos
from doppel.errors import InvalidRequest, NotFound
from doppel.platform import db

MAX_NAME = 200
#: More variables than this is a data file, not a script.
MAX_VARIABLES = 50
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingVariables(InvalidRequest):
    """`fill` was not given a value for every variable; `names` lists the missing ones."""

    def __init__(self, names: list[str]) -> None:
        listed = ", ".join(f"`{n}`" for n in names)
        plural = "s" if len(names) > 1 else ""
        #: "missing variable `first_name`", for messages that name their context first.
        self.short = f"missing variable{plural} {listed}"
        super().__init__(
            f"The values leave {self.short}: send a non-empty value for each of the "
            "template's variables."
        )
        self.names = names


@dataclasses.dataclass(frozen=True)
class TemplateRow:
    template_id: str
    tenant_id: uuid.UUID
    name: str
    replica_id: str
    script: str
    variables: list[str]
    created_at: dt.datetime
    updated_at: dt.datetime


def _from_row(row: asyncpg.Record) -> TemplateRow:
    return TemplateRow(
        template_id=row["template_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        replica_id=row["replica_id"],
        script=row["script"],
        variables=list(row["variables"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def new_id() -> str:
    return "t" + secrets.token_hex(6)


def variables_of(script: str) -> list[str]:
    """The variable names of `script`, each once, in order of first appearance."""
    return list(dict.fromkeys(m[1] for m in _PLACEHOLDER.finditer(script)))


def check_template_script(script: str | None) -> str:
    """The script as a template (as `videos.check_script` plus well-formed placeholders):
    a `{{` or `}}` left over after the variables is a typo (`{{first name}}`, `{first_name}}`)
    that would otherwise be spoken aloud.
    """
    text = videos.check_script(script)
    rest = _PLACEHOLDER.sub("", text)
    for brace in ("{{", "}}"):
        at = rest.find(brace)
        if at >= 0:
            snippet = rest[max(0, at - 20) : at + 22]
            raise InvalidRequest(
                f"The script has a `{brace}` that is not part of a variable (near {snippet!r}). "
                "Write variables as {{name}}: letters, digits and _, not starting with a digit."
            )
    names = variables_of(text)
    if len(names) > MAX_VARIABLES:
        raise InvalidRequest(
            f"The script has {len(names)} variables; a template takes at most {MAX_VARIABLES}."
        )
    return text


def as_text(values: Mapping[str, object]) -> tuple[dict[str, str], list[str]]:
    """Values as the text they put in a script (text as given, numbers as JSON writes them,
    nulls dropped) and the names of those that are neither text nor a number.
    """
    out: dict[str, str] = {}
    wrong = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            out[str(name)] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[str(name)] = msgspec.json.encode(value).decode()
        else:
            wrong.append(str(name))
    return out, wrong


def fill(script: str, values: Mapping[str, object]) -> str:
    """`script` with each `{{name}}` replaced by `values[name]` (stripped). `MissingVariables`
    names every variable without a value (an empty or blank value would leave a gap in the
    speech, so it counts as missing). Values are inserted once, never expanded again, so a
    value holding `{{x}}` is spoken as written.
    """
    names = variables_of(script)
    text, wrong = as_text(values)
    wrong = [n for n in wrong if n in names]
    if wrong:
        listed = ", ".join(f"`{n}`" for n in wrong)
        raise InvalidRequest(f"The value of {listed} is neither text nor a number.")
    missing = [n for n in names if not text.get(n, "").strip()]
    if missing:
        raise MissingVariables(missing)
    return _PLACEHOLDER.sub(lambda m: text[m[1]].strip(), script)


def script_for(template: TemplateRow, values: Mapping[str, object]) -> str:
    """The script one video of `template` speaks: filled, then held to the video rules (a
    filled script can pass the length limit its template kept to).
    """
    return videos.check_script(fill(template.script, values))


async def create(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    name: str | None,
    replica_id: str | None,
    script: str | None,
) -> TemplateRow:
    """Record a template for one of the tenant's replicas (trained or still training: a video
    needs it completed, a template does not).
    """
    if not replica_id:
        raise InvalidRequest("Send `replica_id`: the replica that will speak the template.")
    text = check_template_script(script)
    clean = re.sub(r"\s+", " ", (name or "").strip())
    if len(clean) > MAX_NAME:
        raise InvalidRequest(f"name is {len(clean)} characters long; at most {MAX_NAME}.")
    await replicas.get(pool, tenant_id, replica_id)  # 404 for an unknown or foreign replica
    tid = new_id()
    row = await pool.fetchrow(
        """INSERT INTO templates (template_id, tenant_id, name, replica_id, script, variables)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        tid,
        tenant_id,
        clean or f"template {tid}",
        replica_id,
        text,
        variables_of(text),
    )
    return _from_row(row)


async def get(pool: asyncpg.Pool, tenant_id: uuid.UUID, template_id: str) -> TemplateRow:
    row = await pool.fetchrow(
        """SELECT * FROM templates
           WHERE template_id = $1 AND tenant_id = $2 AND deleted_at IS NULL""",
        template_id,
        tenant_id,
    )
    if row is None:
        raise NotFound(f"No template {template_id} exists for this API key.")
    return _from_row(row)


async def list_page(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, page: int, limit: int
) -> tuple[list[TemplateRow], int]:
    rows, total = await db.fetch_page(
        pool,
        "SELECT * FROM templates WHERE tenant_id = $1 AND deleted_at IS NULL",
        "created_at DESC, template_id",
        [tenant_id],
        page,
        limit,
    )
    return [_from_row(r) for r in rows], total


async def delete(pool: asyncpg.Pool, tenant_id: uuid.UUID, template_id: str) -> None:
    """Hide the template; its batches and videos stay readable."""
    await get(pool, tenant_id, template_id)
    await pool.execute(
        "UPDATE templates SET deleted_at = now(), updated_at = now() WHERE template_id = $1",
        template_id,
    )
