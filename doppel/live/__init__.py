"""Live conversations: turn-taking from the VAD (`turns`), a streaming client for any
OpenAI-compatible LLM (`llm`) and one conversational turn, heard, answered and spoken
(`dialogue`); the call's media: one 40 ms timeline for video and audio (`clock`), the
replica's listening loop and its speech through `doppel.render`'s frame path (`avatar`), and
aiortc peers whose tracks read that timeline (`webrtc`), and the events envelope of the data
channel (`events`).

May import: `doppel.render` and everything below it (not `db` or `queue`). Never records
(`doppel.domain`): a call's records are written by its entry in `api/` (`api/calls.py`).
"""
