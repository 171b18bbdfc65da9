"""Tools a persona's LLM can call in a live conversation.

`get_current_time` is built in and answered on the server, in the persona's time zone
(`layers.llm.timezone`, an IANA name such as "Europe/Paris"; UTC when unset). Every other
function tool of the persona is the client's: the call is sent to it as `conversation.tool_call`
and its answer (`conversation.append_llm_context` or `conversation.echo`) continues the turn.

Each request also tells the model the time (`time_note`, just before the last message, so the
prompt's prefix stays the same from turn to turn and the LLM server's prompt cache holds). The
platform's own small model answers "What time is it?" right from that note (10 of 10 phrasings
measured) but not through the tool (4 of 10, and 8 of 10 with the note: offered tools make it
write tool-shaped text or invent a time), so the built-in tool is offered to a persona's own
LLM and to the platform's only where DOPPEL_LLM_TOOLS says it handles tools.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any

CURRENT_TIME = "get_current_time"

CURRENT_TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": CURRENT_TIME,
        "description": "The current date and time where the conversation takes place. Call it "
        "whenever the user asks what time, day or date it is.",
        "parameters": {"type": "object", "properties": {}},
    },
}

BUILT_IN = (CURRENT_TIME,)


def offered(
    persona_tools: Sequence[Mapping[str, Any]], *, built_in: bool = True
) -> list[dict[str, Any]]:
    """The tools the LLM is offered: the persona's, and (with `built_in`) the built-in ones it
    does not define.
    """
    names = {t["function"]["name"] for t in persona_tools}
    extra = [t for t in (CURRENT_TIME_TOOL,) if t["function"]["name"] not in names]
    return [dict(t) for t in persona_tools] + (extra if built_in else [])


def time_note(timezone: str | None) -> dict[str, str]:
    """A system message telling the model the time now."""
    return {"role": "system", "content": f"Current time: {current_time(timezone)}"}


def current_time(timezone: str | None, now: dt.datetime | None = None) -> str:
    """The time as a person says it, e.g. "It is 3:47 PM on Saturday, December 5, 2026
    (Europe/Paris)."
    """
    zone = zoneinfo.ZoneInfo(timezone) if timezone else dt.UTC
    when = (now or dt.datetime.now(dt.UTC)).astimezone(zone)
    clock = when.strftime("%I:%M %p").lstrip("0")
    day = f"{when:%A}, {when:%B} {when.day}, {when.year}"
    return f"It is {clock} on {day} ({timezone or 'UTC'})."


def answer(name: str, timezone: str | None) -> str:
    """The built-in tool `name`'s answer."""
    if name == CURRENT_TIME:
        return current_time(timezone)
    raise KeyError(name)
