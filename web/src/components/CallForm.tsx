"use client";

import Link from "next/link";
import { type FormEvent, useEffect, useState } from "react";
import { api, ok } from "@/api/client";
import type { ConversationCreated, Persona, Replica } from "@/api/types";
import { ErrorBox } from "./ui";

/** Start a conversation, then hand out its link (the call page; its token lets anyone in). */
export function CallForm({ personas, replicas, onCreated }: { personas: Persona[]; replicas: Replica[]; onCreated: () => void }) {
  const ready = replicas.filter((r) => r.status === "completed");
  const [personaId, setPersonaId] = useState("");
  const [replicaId, setReplicaId] = useState("");
  const [name, setName] = useState("");
  const [record, setRecord] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<ConversationCreated | null>(null);
  const [note, setNote] = useState("");

  useEffect(() => {
    if (!personaId && personas[0]) setPersonaId(personas[0].persona_id);
  }, [personas, personaId]);
  // The replica follows the persona's default (when it can talk), else the first that can.
  const defaultReplica = personas.find((p) => p.persona_id === personaId)?.default_replica_id;
  useEffect(() => {
    const fallback = ready.find((r) => r.replica_id === defaultReplica) ?? ready[0];
    setReplicaId(fallback?.replica_id ?? "");
    // `ready` is derived from `replicas` each render: follow its source.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [defaultReplica, replicas]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    setNote("");
    setBusy(true);
    const body: Record<string, unknown> = { persona_id: personaId };
    if (replicaId) body.replica_id = replicaId;
    if (name.trim()) body.conversation_name = name.trim();
    if (record) body.properties = { enable_recording: true };
    try {
      setCreated(await ok(api().POST("/v2/conversations", { body })));
      setName("");
      onCreated();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function copy() {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.conversation_url);
      setNote("Link copied.");
    } catch {
      setNote("Copy failed: select the link and copy it yourself.");
    }
  }

  return (
    <form className="card" onSubmit={submit} aria-labelledby="new-call">
      <h2 id="new-call">Start a call</h2>
      {personas.length === 0 ? (
        <p className="muted">
          A call needs a persona: make one on the <Link href="/personas/">Personas</Link> page.
        </p>
      ) : null}
      {ready.length === 0 ? <p className="muted">A call needs a replica that has finished training.</p> : null}
      <label htmlFor="call-persona">Persona</label>
      <select id="call-persona" value={personaId} onChange={(e) => setPersonaId(e.target.value)} required>
        {personas.length === 0 ? <option value="">No persona</option> : null}
        {personas.map((p) => (
          <option key={p.persona_id} value={p.persona_id}>
            {p.persona_name}
          </option>
        ))}
      </select>
      <label htmlFor="call-replica">Replica</label>
      <select id="call-replica" value={replicaId} onChange={(e) => setReplicaId(e.target.value)} required>
        {ready.length === 0 ? <option value="">No completed replica</option> : null}
        {ready.map((r) => (
          <option key={r.replica_id} value={r.replica_id}>
            {r.replica_name}
            {r.replica_id === defaultReplica ? " (the persona's default)" : ""}
          </option>
        ))}
      </select>
      <label htmlFor="call-name">Call name (optional)</label>
      <input id="call-name" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
      <label className="check">
        <input type="checkbox" checked={record} onChange={(e) => setRecord(e.target.checked)} /> Record the call
      </label>
      <p className="hint">Tell the person you invite before recording a call.</p>
      <ErrorBox error={error} />
      <button type="submit" disabled={busy || !personaId || !replicaId}>
        {busy ? "Starting…" : "Start call"}
      </button>
      {created ? (
        <div className="created" data-testid="call-created">
          <p>
            <strong>The call is ready.</strong> Open it yourself, or send the link to the person who will talk with the replica.
            Anyone with the link can join while the call is active.
          </p>
          <div className="actions row">
            <input aria-label="Call link" readOnly value={created.conversation_url} onFocus={(e) => e.target.select()} />
            <a className="button" href={created.conversation_url} target="_blank" rel="noopener noreferrer">
              Open
            </a>
            <button type="button" className="secondary" onClick={copy}>
              Copy
            </button>
          </div>
          <p role="status" className="muted small">
            {note}
          </p>
          <p className="small">
            <Link href={`/calls/view/?id=${encodeURIComponent(created.conversation_id)}`}>Details of this call</Link>
          </p>
        </div>
      ) : null}
    </form>
  );
}
