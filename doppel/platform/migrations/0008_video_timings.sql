-- Where a video's time went (issue 6's end-to-end benchmark, and ops): when the worker took it
-- up, when it finished, and seconds per stage (speech, audio features, mouth, frames, encode,
-- thumbnail) as the render measured them.
ALTER TABLE videos ADD COLUMN started_at timestamptz;
ALTER TABLE videos ADD COLUMN finished_at timestamptz;
ALTER TABLE videos ADD COLUMN timings jsonb;
