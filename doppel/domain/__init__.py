"""Records: what the API and the worker keep in PostgreSQL about tenants, replicas, videos,
templates, batches, personas, conversations, transcriptions, share links and webhooks, and each
object's one public view (`views`), from which both the API answer and the webhook body are
built.

May import: `doppel.platform`, `doppel.settings`, `doppel.errors`. Never the engine (audio, face,
voice, replica, render, live) or Triton: records and engine meet only in `orchestrator/jobs/`
(batch) and in `api/` (requests answered at once).
"""
