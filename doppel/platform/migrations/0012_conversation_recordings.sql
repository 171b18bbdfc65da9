-- Recordings of calls (issue 18, item 3): with `properties.enable_recording` the live session
-- writes the call (the replica's video, both voices mixed) to an MP4 when it ends. Its link
-- opens with `recording_token` (like a video's share token, migration 0007), never with the
-- join token: who may watch a recording is not who may join the call.
ALTER TABLE conversations
    ADD COLUMN recording_path text,
    ADD COLUMN recording_duration_s double precision,
    ADD COLUMN recording_token text NOT NULL
        DEFAULT rtrim(translate(encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'),
                                       'base64'), '+/', '-_'), '=');
