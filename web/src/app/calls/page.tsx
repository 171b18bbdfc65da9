"use client";

import Link from "next/link";
import { useCallback, useEffect, useState } from "react";
import { api, listReplicas, ok } from "@/api/client";
import type { ConversationList, Persona, Replica } from "@/api/types";
import { reasonInWords } from "@/call/words";
import { CallForm } from "@/components/CallForm";
import { ErrorBox, Status, fmtDate } from "@/components/ui";

const LIMIT = 20;

// Not /conversations/: on the server that path is a call's own page (a conversation_url).
export default function CallsPage() {
  const [list, setList] = useState<ConversationList | null>(null);
  const [personas, setPersonas] = useState<Persona[]>([]);
  const [replicas, setReplicas] = useState<Replica[]>([]);
  const [page, setPage] = useState(1);
  const [status, setStatus] = useState("");
  const [error, setError] = useState<unknown>(null);

  const load = useCallback(async () => {
    try {
      const query = { page, limit: LIMIT, ...(status ? { status } : {}) };
      setList(await ok(api().GET("/v2/conversations", { params: { query } })));
    } catch (err) {
      setError(err);
    }
  }, [page, status]);
  useEffect(() => {
    void load();
  }, [load]);
  useEffect(() => {
    (async () => {
      setReplicas(await listReplicas());
      setPersonas((await ok(api().GET("/v2/personas", { params: { query: { page: 1, limit: 100 } } }))).data);
    })().catch(setError);
  }, []);

  const pages = list ? Math.max(1, Math.ceil(list.total_count / LIMIT)) : 1;
  return (
    <div className="page two">
      <section aria-labelledby="calls-title">
        <h1 id="calls-title">Conversations</h1>
        <p className="muted">Live calls with a replica: it listens, and answers as its persona, with its face and voice.</p>
        <ErrorBox error={error} />
        <div className="filter">
          <label htmlFor="calls-status">Show</label>
          <select
            id="calls-status"
            value={status}
            onChange={(e) => {
              setStatus(e.target.value);
              setPage(1);
            }}
          >
            <option value="">All conversations</option>
            <option value="active">Active</option>
            <option value="ended">Ended</option>
          </select>
        </div>
        {list === null && !error ? <p className="muted">Loading…</p> : null}
        {list?.data.length === 0 ? <p className="muted">No conversations yet.</p> : null}
        <ul className="list" aria-label="Your conversations" data-testid="calls-list">
          {list?.data.map((c) => (
            <li key={c.conversation_id} className="item" data-testid="call-item" data-status={c.status}>
              <div className="grow">
                <h3>
                  <Link href={`/calls/view/?id=${encodeURIComponent(c.conversation_id)}`}>{c.conversation_name || c.conversation_id}</Link>
                </h3>
                <p className="meta">
                  <Status value={c.status} /> <span className="muted small">{fmtDate(c.created_at)}</span>
                </p>
                {c.shutdown_reason ? <p className="muted small">{reasonInWords(c.shutdown_reason)}</p> : null}
              </div>
            </li>
          ))}
        </ul>
        {list && pages > 1 ? (
          <nav className="pager" aria-label="Pages of conversations">
            <button type="button" className="secondary" onClick={() => setPage((p) => p - 1)} disabled={page <= 1}>
              Previous
            </button>
            <span>
              Page {page} of {pages} ({list.total_count} conversations)
            </span>
            <button type="button" className="secondary" onClick={() => setPage((p) => p + 1)} disabled={page >= pages}>
              Next
            </button>
          </nav>
        ) : null}
      </section>
      <CallForm personas={personas} replicas={replicas} onCreated={() => (page === 1 ? void load() : setPage(1))} />
    </div>
  );
}
