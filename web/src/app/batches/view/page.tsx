"use client";

import Link from "next/link";
import { useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState } from "react";
import { fetchBlob } from "@/api/client";
import { watch } from "@/api/live";
import type { Batch } from "@/api/types";
import { ErrorBox, ProgressBar, Status, saveBlob } from "@/components/ui";

const count = (b: Batch, status: string) => b.counts[status] ?? 0;
const UNFINISHED = ["pending", "queued", "generating"];
const batchDone = (b: Batch) => b.status === "completed" || UNFINISHED.every((s) => count(b, s) === 0);

function BatchView({ id }: { id: string }) {
  const [b, setB] = useState<Batch | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    const stop = new AbortController();
    void watch<Batch>(`/v2/batches/${id}`, setB, batchDone, stop.signal, setError);
    return () => stop.abort();
  }, [id]);

  async function results() {
    try {
      saveBlob(await fetchBlob(`/v2/batches/${id}/results.csv`), `batch-${id}.csv`);
    } catch (err) {
      setError(err);
    }
  }

  if (!b) return error ? <ErrorBox error={error} /> : <p className="muted">Loading…</p>;
  const rows = b.rows ?? [];
  const total = b.row_count ?? rows.length;
  const finished = count(b, "ready") + count(b, "error");
  return (
    <section className="card" aria-labelledby="batch-title" data-testid="batch" data-status={b.status}>
      <p>
        <Link href="/templates/">← Templates &amp; batches</Link>
      </p>
      <h1 id="batch-title">{b.batch_name || `Batch ${b.batch_id}`}</h1>
      <p className="meta" data-testid="batch-counts">
        <Status value={b.status} /> {count(b, "ready")} ready · {count(b, "error")} error · {count(b, "generating")}{" "}
        generating · {count(b, "queued") + count(b, "pending")} waiting
      </p>
      <ProgressBar value={total ? (100 * finished) / total : 0} label="Batch progress" />
      <div className="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Row</th>
              <th scope="col">Values</th>
              <th scope="col">Status</th>
              <th scope="col">Video</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.row_index} data-testid="batch-row" data-status={r.status}>
                <td title={r.row_key ? `row_key ${r.row_key}` : undefined}>{r.row_index}</td>
                <td className="small">
                  {Object.entries(r.variables)
                    .map(([k, v]) => `${k}: ${v}`)
                    .join(", ")}
                </td>
                <td>
                  <Status value={r.status} />
                  {r.error_message ? <p className="error-text small">{r.error_message}</p> : null}
                </td>
                <td>{r.video_id ? <Link href={`/videos/view/?id=${encodeURIComponent(r.video_id)}`}>Open</Link> : "—"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorBox error={error} />
      <button type="button" onClick={results}>
        Download results CSV
      </button>
    </section>
  );
}

function FromQuery() {
  const id = useSearchParams()?.get("id") ?? "";
  return id ? <BatchView id={id} /> : <p>No batch chosen. <Link href="/templates/">Back</Link>.</p>;
}

export default function BatchPage() {
  return (
    <Suspense>
      <FromQuery />
    </Suspense>
  );
}
