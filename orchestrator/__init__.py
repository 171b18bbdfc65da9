"""arq workers on Redis: training, rendering, batches, webhooks (and transcriptions today)."""
