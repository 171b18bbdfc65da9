-- Speech-to-text requests, synchronous and queued. The row is the job's state: the worker
-- reads its input from `audio_path` and writes `result` or `error` back here.
CREATE TABLE transcriptions (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'failed')),
    filename text,
    audio_path text,
    duration_s double precision,
    language text,
    result jsonb,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX transcriptions_tenant_created ON transcriptions (tenant_id, created_at DESC);
