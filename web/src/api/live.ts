/**
 * Live status of a replica, video or batch: server-sent events from `<path>/events` when the
 * server has that route (read with fetch + a stream parser, because EventSource cannot send the
 * `x-api-key` header), else polling `GET <path>` every 2 s. Either way it stops at a terminal
 * status or when `signal` aborts.
 */
import { capabilities } from "./capabilities";
import { call } from "./client";
import { getKey } from "./session";

const POLL_MS = 2000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** `data:` payloads of an event stream, one string per event. */
async function* events(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

export async function watch<T>(
  path: string,
  onData: (item: T) => void,
  isDone: (item: T) => boolean,
  signal: AbortSignal,
  onError: (err: unknown) => void = () => {},
): Promise<void> {
  const caps = await capabilities();
  const route = path.replace(/\/[^/]+$/, "/{id}");
  const hasEvents = ["replica_id", "video_id", "batch_id", "id"].some((p) =>
    caps.has(`${route.replace("{id}", `{${p}}`)}/events`),
  );
  if (hasEvents && !signal.aborted) {
    try {
      const key = getKey();
      const response = await fetch(`${path}/events`, {
        headers: { accept: "text/event-stream", ...(key ? { "x-api-key": key } : {}) },
        signal,
      });
      if (response.ok && response.body) {
        for await (const data of events(response.body)) {
          const item = JSON.parse(data) as T;
          onData(item);
          if (isDone(item)) return;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      onError(err);
    }
  }
  // No events route, or the stream ended early (a proxy timeout): poll.
  while (!signal.aborted) {
    try {
      const item = await call<T>("GET", path);
      if (signal.aborted) return;
      onData(item);
      if (isDone(item)) return;
    } catch (err) {
      if (signal.aborted) return;
      onError(err);
    }
    await sleep(POLL_MS, signal);
  }
}
