-- Replicas (a trained face and voice) and videos (a replica speaking a script). Each row is its
-- job's state: the worker reads the inputs from here and writes progress and outcome back.
CREATE TABLE replicas (
    replica_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    replica_name text NOT NULL,
    replica_type text NOT NULL DEFAULT 'user' CHECK (replica_type IN ('user', 'system')),
    status text NOT NULL DEFAULT 'started' CHECK (status IN ('started', 'completed', 'error')),
    -- "37/100" while training (Tavus's format), "100/100" when completed.
    training_progress text NOT NULL DEFAULT '0/100',
    error_message text,
    -- The replica's own folder: sources/ (the training videos, named by index) and model/.
    folder text NOT NULL,
    train_paths text[] NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX replicas_tenant_created ON replicas (tenant_id, created_at DESC);

CREATE TABLE videos (
    video_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    replica_id text NOT NULL REFERENCES replicas (replica_id) ON DELETE CASCADE,
    video_name text,
    script text NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'generating', 'ready', 'error', 'deleted')),
    progress integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    error_message text,
    video_path text,
    thumbnail_path text,
    duration_s double precision,
    disclosure_mark boolean NOT NULL DEFAULT true,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX videos_tenant_created ON videos (tenant_id, created_at DESC);
