"use client";

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useCallback, useEffect, useState } from "react";
import { api, ok } from "@/api/client";
import type { Conversation } from "@/api/types";
import { reasonInWords } from "@/call/words";
import { ErrorBox, Status, fmtDate } from "@/components/ui";

// `transcript` and `turns` are free-form in the schema (lists of objects): their shapes here.
/** `at`: an ISO 8601 time (transcript lines) or Unix seconds (turns). */
type Said = { role: string; content: string; at: string | number };
const WHO: Record<string, string> = { user: "Person", replica: "Replica", assistant: "Replica", system: "System" };
type Turn = {
  turn_idx: number;
  source: string;
  at: number;
  interrupted: boolean;
  first_audio_s?: number | null;
  turn_detected_s?: number | null;
  transcript_s?: number | null;
  llm_first_text_s?: number | null;
  first_sentence_s?: number | null;
  voice_s?: number | null;
  rendered_s?: number | null;
  first_frame_s?: number | null;
};
/** The stages of a reply, each in seconds from the end of the person's speech. */
const STAGES: [keyof Turn, string][] = [
  ["turn_detected_s", "Turn detected"],
  ["transcript_s", "Transcript"],
  ["llm_first_text_s", "LLM first text"],
  ["first_sentence_s", "First sentence"],
  ["voice_s", "Voice"],
  ["rendered_s", "Rendered"],
  ["first_frame_s", "First frame"],
];
const POLL_MS = 3000;

const secs = (v: unknown) => (typeof v === "number" ? `${v.toFixed(2)} s` : "—");
function clock(at: string | number): string {
  const when = typeof at === "number" ? new Date(at * 1000) : new Date(at);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString(undefined, { timeStyle: "medium" });
}

function CallView({ id }: { id: string }) {
  const [c, setC] = useState<Conversation | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [ending, setEnding] = useState(false);

  const load = useCallback(async () => {
    try {
      setC(await ok(api().GET("/v2/conversations/{conversation_id}", { params: { path: { conversation_id: id }, query: { verbose: true } } })));
    } catch (err) {
      setError(err);
    }
  }, [id]);
  useEffect(() => {
    void load();
  }, [load]);
  // While the call is on, its transcript and turns grow: read them again every few seconds.
  const active = c?.status === "active";
  useEffect(() => {
    if (!active) return;
    const timer = setInterval(() => void load(), POLL_MS);
    return () => clearInterval(timer);
  }, [active, load]);

  async function end() {
    if (!window.confirm("End this call? Whoever is in it is disconnected.")) return;
    setEnding(true);
    try {
      await ok(api().POST("/v2/conversations/{conversation_id}/end", { params: { path: { conversation_id: id } } }));
      await load(); // verbose again: with its transcript and turns
    } catch (err) {
      setError(err);
    } finally {
      setEnding(false);
    }
  }

  if (!c) return error ? <ErrorBox error={error} hint="Check the link, or go back to the list of conversations." /> : <p className="muted">Loading…</p>;
  const transcript = (c.transcript ?? []) as Said[];
  const turns = (c.turns ?? []) as Turn[];
  const recording = c.recording_url;
  return (
    <section className="card" aria-labelledby="call-title" data-testid="call-view" data-status={c.status}>
      <p>
        <Link href="/calls/">← All conversations</Link>
      </p>
      <h1 id="call-title">{c.conversation_name || c.conversation_id}</h1>
      <p className="meta">
        <Status value={c.status} /> <span className="muted">started {fmtDate(c.created_at)}</span>
        {c.ended_at ? <span className="muted"> · ended {fmtDate(c.ended_at)}</span> : null}
        {c.audio_only ? <span className="muted"> · audio only</span> : null}
      </p>
      {c.shutdown_reason ? <p data-testid="shutdown-reason">{reasonInWords(c.shutdown_reason)}</p> : null}
      <p className="small muted">
        Persona <code>{c.persona_id}</code> · replica <code>{c.replica_id}</code>
      </p>
      <ErrorBox error={error} />
      {active ? (
        <div className="actions row">
          <a className="button" href={c.conversation_url} target="_blank" rel="noopener noreferrer">
            Open call page
          </a>
          <button type="button" className="danger" onClick={end} disabled={ending}>
            {ending ? "Ending…" : "End call"}
          </button>
        </div>
      ) : null}
      {recording ? (
        <p>
          <a href={recording} data-testid="recording-link">
            Recording of the call
          </a>
        </p>
      ) : null}

      <h2>Transcript</h2>
      {transcript.length === 0 ? <p className="muted">Nothing said yet.</p> : null}
      {transcript.length ? (
        <div className="table-wrap">
          <table data-testid="transcript">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Who</th>
                <th scope="col">Said</th>
              </tr>
            </thead>
            <tbody>
              {transcript.map((s, i) => (
                <tr key={i}>
                  <td>{clock(s.at)}</td>
                  <td>{WHO[s.role] ?? s.role}</td>
                  <td>{s.content}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}

      <h2>Reply latency</h2>
      {turns.length === 0 ? <p className="muted">No replies yet.</p> : null}
      {turns.length ? (
        <div className="table-wrap">
          <table data-testid="turns">
            <caption>Seconds from the end of the person&apos;s speech to each stage of the reply.</caption>
            <thead>
              <tr>
                <th scope="col">Turn</th>
                <th scope="col">Source</th>
                <th scope="col">First audio</th>
                {STAGES.map(([, label]) => (
                  <th scope="col" key={label}>
                    {label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {turns.map((t) => (
                <tr key={t.turn_idx}>
                  <td>
                    {t.turn_idx}
                    {t.interrupted ? <span className="muted small"> (interrupted)</span> : null}
                  </td>
                  <td>{t.source}</td>
                  <td>
                    <strong>{secs(t.first_audio_s)}</strong>
                  </td>
                  {STAGES.map(([field]) => (
                    <td key={field}>{secs(t[field])}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function FromQuery() {
  const id = useSearchParams()?.get("id") ?? "";
  return id ? (
    <CallView id={id} />
  ) : (
    <p>
      No conversation chosen. <Link href="/calls/">See all conversations</Link>.
    </p>
  );
}

export default function CallViewPage() {
  return (
    <Suspense>
      <FromQuery />
    </Suspense>
  );
}
