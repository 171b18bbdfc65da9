-- Conversations (Tavus `/v2/conversations`, issue 17): a live call between a person and a
-- replica speaking for a persona. The row is made by the API and kept up to date by the live
-- session: its events, per-turn timings and transcript are appended as the call goes, and it
-- ends once (`status` 'ended', `shutdown_reason`, `ended_at`), whoever ends it first.
CREATE TABLE conversations (
    conversation_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- A conversation outlives neither its replica nor its persona being removed for good.
    replica_id text NOT NULL REFERENCES replicas (replica_id) ON DELETE CASCADE,
    persona_id text NOT NULL REFERENCES personas (persona_id) ON DELETE CASCADE,
    conversation_name text NOT NULL,
    -- Appended to the persona's context for this call only.
    conversational_context text NOT NULL DEFAULT '',
    custom_greeting text NOT NULL DEFAULT '',
    callback_url text,
    audio_only boolean NOT NULL DEFAULT false,
    test_mode boolean NOT NULL DEFAULT false,
    -- max_call_duration, participant_left_timeout, participant_absent_timeout (seconds),
    -- language (a Whisper code): every key present, defaults filled in by the API.
    properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    shutdown_reason text,
    -- Opens the call page (`/conversations/{id}?t=...`) without the API key, like a video's
    -- share token (migration 0007): 22 URL-safe characters from 16 random bytes.
    join_token text NOT NULL
        DEFAULT rtrim(translate(encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                       'base64'), '+/', '-_'), '='),
    -- Appended by the live session, in order: interaction events, one object of stage times
    -- per turn, and `{role, content, at}` per utterance.
    events jsonb NOT NULL DEFAULT '[]'::jsonb,
    turns jsonb NOT NULL DEFAULT '[]'::jsonb,
    transcript jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    deleted_at timestamptz,
    CHECK ((status = 'ended') = (ended_at IS NOT NULL))
);
CREATE INDEX conversations_tenant_created ON conversations (tenant_id, created_at DESC);
-- The live session's capacity check counts the calls in progress.
CREATE INDEX conversations_active ON conversations (status) WHERE status = 'active';
