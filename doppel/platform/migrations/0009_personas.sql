-- Personas (Tavus `/v2/personas`): how a replica behaves in a conversation. The system prompt
-- and context go to an OpenAI-compatible LLM (`layers.llm`: model, base_url, tools). The LLM's
-- API key is kept apart from the layers document so that no read of a persona returns it.
CREATE TABLE personas (
    persona_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    persona_name text NOT NULL,
    system_prompt text NOT NULL,
    context text NOT NULL DEFAULT '',
    pipeline_mode text NOT NULL DEFAULT 'full',
    -- A deleted replica leaves the persona without a default (a conversation then names one).
    default_replica_id text REFERENCES replicas (replica_id) ON DELETE SET NULL,
    -- The layers as the client sent them, checked, without `llm.api_key`.
    layers jsonb NOT NULL DEFAULT '{}'::jsonb,
    llm_api_key text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX personas_tenant_created ON personas (tenant_id, created_at DESC);
