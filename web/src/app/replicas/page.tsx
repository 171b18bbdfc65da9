"use client";

import { useCallback, useEffect, useState } from "react";
import { api, messageOf, ok } from "@/api/client";
import { watch } from "@/api/live";
import type { Replica } from "@/api/types";
import { ReplicaForm } from "@/components/ReplicaForm";
import { ErrorBox, ProgressBar, Status, Thumb, fmtDate } from "@/components/ui";

/** "37/100" -> 37; a completed replica is 100. */
function percent(r: Replica): number {
  if (r.status === "completed") return 100;
  const [done, total] = r.training_progress.split("/").map(Number);
  return done !== undefined && total ? (100 * done) / total : 0;
}

function ReplicaRow({ initial, onDelete }: { initial: Replica; onDelete: (id: string) => void }) {
  const [r, setR] = useState(initial);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => setR(initial), [initial]);
  useEffect(() => {
    if (initial.status !== "started") return;
    const stop = new AbortController();
    void watch<Replica>(`/v2/replicas/${initial.replica_id}`, setR, (x) => x.status !== "started", stop.signal);
    return () => stop.abort();
  }, [initial.replica_id, initial.status]);

  async function remove() {
    if (!window.confirm(`Delete replica “${r.replica_name}”? Its videos stay, but no new ones can be made.`)) return;
    try {
      await ok(api().DELETE("/v2/replicas/{replica_id}", { params: { path: { replica_id: r.replica_id } } }));
      onDelete(r.replica_id);
    } catch (err) {
      setError(err);
    }
  }

  return (
    <li className="item" data-testid="replica" data-status={r.status}>
      <Thumb url={r.thumbnail_url} alt={`${r.replica_name}`} />
      <div className="grow">
        <h3>{r.replica_name}</h3>
        <p className="meta">
          <Status value={r.status} /> <span className="muted">{fmtDate(r.created_at)}</span>{" "}
          <code className="muted">{r.replica_id}</code>
        </p>
        {r.status === "started" ? (
          <ProgressBar value={percent(r)} label={`Training ${r.replica_name}`} />
        ) : null}
        {r.status === "error" ? (
          <div className="error" role="alert">
            <p>{r.error_message ?? "Training failed."}</p>
            <p className="hint">Record a new video that meets the requirements above, then create the replica again.</p>
          </div>
        ) : null}
        <ErrorBox error={error} />
      </div>
      <div className="actions">
        <button type="button" className="secondary" onClick={remove} aria-label={`Delete replica ${r.replica_name}`}>
          Delete
        </button>
      </div>
    </li>
  );
}

export default function ReplicasPage() {
  const [items, setItems] = useState<Replica[] | null>(null);
  const [error, setError] = useState<unknown>(null);

  const load = useCallback(async () => {
    try {
      const page = await ok(api().GET("/v2/replicas", { params: { query: { page: 1, limit: 100 } } }));
      setItems(page.data);
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  return (
    <div className="page two">
      <section aria-labelledby="replicas-title">
        <h1 id="replicas-title">Replicas</h1>
        <ErrorBox error={error} hint={error ? "Reload the page to try again." : undefined} />
        {items === null && !error ? <p className="muted">Loading…</p> : null}
        {items?.length === 0 ? <p className="muted">No replicas yet. Upload a training video to make one.</p> : null}
        <ul className="list" aria-label="Your replicas">
          {items?.map((r) => (
            <ReplicaRow key={r.replica_id} initial={r} onDelete={(id) => setItems((xs) => xs?.filter((x) => x.replica_id !== id) ?? null)} />
          ))}
        </ul>
      </section>
      <ReplicaForm onCreated={() => void load().catch((err: unknown) => setError(messageOf(err)))} />
    </div>
  );
}
