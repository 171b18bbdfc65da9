"""Live conversations: turn-taking from the VAD (`turns`), a streaming client for any
OpenAI-compatible LLM (`llm`) and one conversational turn, heard, answered and spoken
(`dialogue`). The WebRTC session will join them to `doppel.render`'s frame path.

May import: `doppel.render` and everything below it (not `db` or `queue`). Never records
(`doppel.domain`): a call's records are written by its entry in `api/`.
"""
