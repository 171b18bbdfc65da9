/** Why a call ended (`shutdown_reason`, Tavus's words), as the call page and the Conversations
 * pages say it. */
const WORDS: Record<string, string> = {
  end_conversation_endpoint_hit: "It was ended from the Doppel app or API.",
  "max_call_duration reached": "It reached its longest allowed length.",
  "participant_absent_timeout reached": "Nobody joined it in time.",
  "participant_left_timeout reached": "The person left the call.",
  test_mode: "It was a test conversation, created already ended.",
  conversation_deleted: "The conversation was deleted.",
  server_shutdown: "The Doppel server was shut down.",
};

export function reasonInWords(reason: string | null | undefined): string {
  if (!reason) return "";
  return WORDS[reason] ?? `Reason: ${reason}.`;
}
