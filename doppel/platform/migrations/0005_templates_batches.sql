-- Templates (a replica and a script with `{{variables}}`) and batches (one video per row of
-- variables). A batch row's status is not stored: it is its video's status, `error` when the
-- row could not become a video (`error_message` says why), `pending` while its video is not
-- made yet (a queue outage mid-batch; resubmitting the batch makes the rest).
CREATE TABLE templates (
    template_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name text NOT NULL,
    replica_id text NOT NULL REFERENCES replicas (replica_id) ON DELETE CASCADE,
    script text NOT NULL,
    -- The script's variable names in order of first appearance (derived, kept for listing).
    variables text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
CREATE INDEX templates_tenant_created ON templates (tenant_id, created_at DESC);

CREATE TABLE batches (
    batch_id text PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    template_id text NOT NULL REFERENCES templates (template_id) ON DELETE CASCADE,
    batch_name text,
    -- sha256 of the template and every row's key and variables: the same submission again
    -- finds this batch instead of making another.
    batch_key text NOT NULL,
    -- Kept so that rows still `pending` are made, on resubmission, as the first request asked.
    callback_url text,
    disclosure_mark boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, batch_key)
);
CREATE INDEX batches_tenant_created ON batches (tenant_id, created_at DESC);

CREATE TABLE batch_rows (
    batch_id text NOT NULL REFERENCES batches (batch_id) ON DELETE CASCADE,
    -- 1-based, as the error messages say ("Row 3: ...").
    row_index integer NOT NULL CHECK (row_index >= 1),
    -- The client's `row_key`, or a hash of the template and the row's variables.
    row_key text NOT NULL,
    variables jsonb NOT NULL,
    error_message text,
    video_id text REFERENCES videos (video_id) ON DELETE SET NULL,
    PRIMARY KEY (batch_id, row_index),
    UNIQUE (batch_id, row_key)
);
-- A row of a later batch with the same key reuses a live video (looked up by key).
CREATE INDEX batch_rows_key ON batch_rows (row_key);
CREATE INDEX batch_rows_video ON batch_rows (video_id);
