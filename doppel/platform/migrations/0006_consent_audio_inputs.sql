-- Spoken consent (a user's replica is trained only after the person is heard consenting) and
-- audio-driven videos (a video speaks an uploaded or fetched recording instead of a script).

-- The separate consent video, when one was sent (else the training video is listened to), and
-- what Whisper heard in it, kept whether or not it was accepted.
ALTER TABLE replicas ADD COLUMN consent_path text;
ALTER TABLE replicas ADD COLUMN consent_transcript text;

-- A video speaks either its script or its stored audio (`<tenant>/videos/<id>.input<suffix>`),
-- never both.
ALTER TABLE videos ADD COLUMN audio_path text;
ALTER TABLE videos ALTER COLUMN script DROP NOT NULL;
ALTER TABLE videos ADD CONSTRAINT videos_script_or_audio
    CHECK ((script IS NULL) <> (audio_path IS NULL));
