-- Webhooks for conversations (issue 18, item 4): a conversation's `callback_url` receives Tavus's
-- events (system.replica_joined, system.shutdown, application.transcription_ready), recorded and
-- retried as replicas' and videos' are.
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_object_type_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_object_type_check
    CHECK (object_type IN ('replica', 'video', 'conversation'));
