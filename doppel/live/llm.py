"""A streaming client for any OpenAI-compatible chat endpoint (a persona's `layers.llm`).

A live conversation speaks the reply while it is still being written: `ChatClient.stream`
yields the text as it arrives (server-sent events, `POST {base_url}/chat/completions` with
`stream: true`), assembles the tool calls the model makes (their arguments arrive in
fragments), and `sentences` cuts the text into sentences for the voice, one at a time. Read the
stream inside `contextlib.aclosing(...)`: leaving the loop early (the user interrupted) then
closes the HTTP stream at once, so the model stops writing.

Errors name the endpoint and what to change: a refused key, an unknown model, an endpoint that
does not answer or answers with something that is not a chat completion stream.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from doppel.errors import DoppelError
from doppel.settings import Settings


class LlmError(DoppelError):
    """The LLM endpoint refused the request or did not answer as an OpenAI-compatible one."""


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    #: Up to and including the version, e.g. https://api.openai.com/v1.
    base_url: str
    model: str
    api_key: str | None = None
    #: Seconds to wait for the first byte and between bytes of the stream.
    timeout_s: float = 30.0
    temperature: float | None = None
    max_tokens: int | None = None


@dataclasses.dataclass
class ToolCall:
    id: str
    name: str
    #: The arguments as the model wrote them (JSON text; `arguments_json` parses them).
    arguments: str = ""

    def arguments_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise LlmError(
                f"The model called {self.name} with arguments that are not JSON: "
                f"{self.arguments[:200]!r}."
            ) from exc
        if not isinstance(value, dict):
            raise LlmError(f"The model called {self.name} with {value!r}, not a JSON object.")
        return value


@dataclasses.dataclass
class Reply:
    """What one completion said, filled in as its stream is read."""

    text: str = ""
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    #: "stop", "length", "tool_calls"; None while streaming or where the stream was cut.
    finish_reason: str | None = None
    #: The tool calls came as text (`{"name": ..., "arguments": ...}`, Hermes/Qwen style) from a
    #: server that does not parse them (llama.cpp's generic chat formats): such a server does
    #: not render tool messages either, so the result goes back as a system message.
    calls_in_text: bool = False


def config_for(layers: Mapping[str, Any], api_key: str | None, settings: Settings) -> LlmConfig:
    """The LLM a persona talks through: its own `layers.llm` endpoint (model, base_url and its
    key), or, where it names no endpoint, the platform's own model (`settings.llm_url`, which
    `make up` starts), under the persona's model name if it gives one.
    """
    layer = layers.get("llm") or {}
    if layer.get("base_url"):
        return LlmConfig(layer["base_url"], layer.get("model", ""), api_key)
    if not settings.llm_url:
        raise LlmError(
            "This persona names no LLM (`layers.llm.base_url`) and the platform runs none "
            "(DOPPEL_LLM_URL): set one of them."
        )
    return LlmConfig(settings.llm_url, layer.get("model") or settings.llm_model)


def persona_messages(
    system_prompt: str, context: str, history: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The chat for a persona: its system prompt and context as the system message, then the
    conversation so far (`{"role": "user" | "assistant" | "tool", "content": ...}` each).
    """
    system = system_prompt.strip()
    if context.strip():
        system += "\n\nContext:\n" + context.strip()
    return [{"role": "system", "content": system}, *[dict(m) for m in history]]


class ChatClient:
    def __init__(self, config: LlmConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s))
        )
        self._own = http is None

    async def close(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def _body(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": list(messages),
            "stream": True,
        }
        if tools:
            body["tools"] = list(tools)
        if self.config.temperature is not None:
            body["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        return body

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        reply: Reply | None = None,
        *,
        recognise: Sequence[str] = (),
    ) -> AsyncGenerator[str, None]:
        """The reply's text as it arrives. `reply` (when given) collects the whole text, the
        tool calls and the finish reason; read it after the loop.

        A reply that begins like a tool call written as text (`{` or `<tool_call>`) of one of
        the tools (`tools`, or the names in `recognise` where the tools are not sent) is held
        to its end: read as tool calls when it is one (`reply.calls_in_text`), else yielded.
        """
        reply = reply if reply is not None else Reply()
        names = {str(t.get("function", {}).get("name")) for t in tools} | set(recognise)
        names.discard("None")

        def held() -> bool:  # the reply so far begins as a tool call written as text would
            return bool(names) and reply.text.lstrip()[:1] in ("{", "<")

        async for text in self._stream(messages, tools, reply):
            if not held():
                yield text
        if held() and not reply.tool_calls:
            calls = text_tool_calls(reply.text, names)
            if calls:
                reply.tool_calls, reply.calls_in_text, reply.text = calls, True, ""
            else:
                yield reply.text.lstrip()

    async def _stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        reply: Reply,
    ) -> AsyncGenerator[str, None]:
        headers = {"accept": "text/event-stream"}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        where = self.config.base_url
        try:
            async with self._http.stream(
                "POST", self._url(), json=self._body(messages, tools), headers=headers
            ) as response:
                if response.status_code != 200:
                    raise _refusal(response.status_code, await response.aread(), where)
                calls: dict[int, ToolCall] = {}
                async for line in response.aiter_lines():
                    data = _event_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        break
                    for text in _apply_chunk(data, reply, calls, where):
                        yield text
                reply.tool_calls = [calls[i] for i in sorted(calls)]
        except httpx.TimeoutException as exc:
            raise LlmError(
                f"The LLM at {where} did not answer within {self.config.timeout_s:.0f} s."
            ) from exc
        except httpx.HTTPError as exc:
            raise LlmError(f"The LLM at {where} could not be reached: {exc}.") from exc

    async def complete(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] = ()
    ) -> Reply:
        """The whole reply (streamed, then gathered)."""
        reply = Reply()
        async for _ in self.stream(messages, tools, reply):
            pass
        return reply


_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def text_tool_calls(text: str, names: set[str]) -> list[ToolCall]:
    """Tool calls written as text: JSON objects `{"name": ..., "arguments": ...}`, bare (one
    after another) or each in `<tool_call>` tags, every one naming a tool in `names`; [] when
    the text is anything else.
    """
    known = {_plain(n): n for n in names}  # a small model writes "get current time"
    tagged = _TAGGED.findall(text)
    pieces = tagged if tagged else [text.strip()]
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    for piece in pieces:
        rest = piece.strip()
        while rest:
            try:
                value, end = decoder.raw_decode(rest)
            except json.JSONDecodeError:
                return []
            rest = rest[end:].strip()
            if not isinstance(value, dict) or _plain(str(value.get("name"))) not in known:
                return []
            name = known[_plain(str(value["name"]))]
            arguments = value.get("arguments", value.get("parameters", {}))
            if isinstance(arguments, str):
                arguments_text = arguments
            else:
                arguments_text = json.dumps(arguments if isinstance(arguments, dict) else {})
            calls.append(ToolCall(f"call_{len(calls) + 1}", name, arguments_text))
    return calls


def _plain(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def _event_data(line: str) -> str | None:
    """The payload of a server-sent event's `data:` line; None for comments, blank lines and
    other fields.
    """
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _apply_chunk(data: str, reply: Reply, calls: dict[int, ToolCall], where: str) -> list[str]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise LlmError(
            f"The LLM at {where} sent something that is not a chat completion chunk: "
            f"{data[:120]!r}."
        ) from exc
    if isinstance(chunk, dict) and "error" in chunk:
        raise LlmError(f"The LLM at {where} stopped with an error: {_message(chunk)}.")
    texts = []
    for choice in chunk.get("choices", []) if isinstance(chunk, dict) else []:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            reply.text += text
            texts.append(text)
        for part in delta.get("tool_calls") or []:
            index = int(part.get("index", len(calls)))
            call = calls.setdefault(index, ToolCall(id="", name=""))
            call.id = part.get("id") or call.id
            fn = part.get("function") or {}
            call.name += fn.get("name") or ""
            call.arguments += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            reply.finish_reason = choice["finish_reason"]
    return texts


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or body)[:300]


def _refusal(status: int, raw: bytes, where: str) -> LlmError:
    try:
        detail = _message(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        detail = raw.decode("utf-8", "replace")[:300]
    if status in (401, 403):
        return LlmError(
            f"The LLM at {where} refused the API key ({status}: {detail}). Check "
            "`layers.llm.api_key`."
        )
    if status == 404:
        return LlmError(
            f"The LLM at {where} has no such model or route ({detail}). Check "
            "`layers.llm.model`, and that `base_url` ends with the API version (e.g. /v1)."
        )
    return LlmError(f"The LLM at {where} answered {status}: {detail}.")


#: The end of a sentence: ., ! or ? with any closing quotes or brackets (group 1), then a space
#: and a capital or an opening quote; or a line break. "e.g. this" and "3.5" end nothing.
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[A-Z\"'(\[])|\n+")


_WORD = re.compile(r"\w")


#: A clause's end inside a sentence: a comma, semicolon, colon or dash, then a space.
_CLAUSE_END = re.compile(r"([,;:]|\s[-\u2013\u2014])\s+")


async def sentences(
    texts: AsyncIterator[str], min_chars: int = 12, first_clause: int = 0
) -> AsyncIterator[str]:
    """Whole sentences from streamed text, each as soon as the next one has begun (the voice
    speaks sentence by sentence); a sentence under `min_chars` joins the next ("Yes." alone
    would be a clip too short to sound natural), and so does a piece with no word in it. The
    rest is yielded at the end, if it holds a word.

    `first_clause` (a latency lever; 0: off): the first piece may end at a clause (a comma
    and a space, ...) once it holds that many characters, so the voice starts before the
    LLM has written the whole first sentence.
    """
    buffer = ""
    first = True
    async for text in texts:
        buffer += text
        start = 0
        for m in _SENTENCE_END.finditer(buffer):
            piece = buffer[start : m.end(1) if m.group(1) else m.start()].strip()
            if len(piece) >= min_chars and _WORD.search(piece):
                yield piece
                first = False
                start = m.end()
        buffer = buffer[start:]
        if first and first_clause:
            for m in _CLAUSE_END.finditer(buffer):
                piece = buffer[: m.end(1)].strip()
                if len(piece) >= first_clause and _WORD.search(piece):
                    yield piece
                    first = False
                    buffer = buffer[m.end() :]
                    break
    # A remainder with no word in it (a stray closing quote) is not a sentence.
    if _WORD.search(buffer):
        yield buffer.strip()
