"use client";

import { type FormEvent, useEffect, useState } from "react";
import { api, ok } from "@/api/client";
import { getCallbackUrl, setCallbackUrl } from "@/api/session";
import type { Delivery, WebhookSecret } from "@/api/types";
import { ErrorBox, fmtDate } from "@/components/ui";

function deliveryState(d: Delivery): { label: string; tone: string } {
  if (d.delivered_at) return { label: `delivered (${d.last_status_code ?? "2xx"})`, tone: "ok" };
  if (d.next_attempt_at) return { label: "retrying", tone: "busy" };
  return { label: "failed", tone: "bad" };
}

export default function WebhooksPage() {
  const [url, setUrl] = useState("");
  const [note, setNote] = useState("");
  const [secret, setSecret] = useState<WebhookSecret | null>(null);
  const [reveal, setReveal] = useState(false);
  const [deliveries, setDeliveries] = useState<Delivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    setUrl(getCallbackUrl());
    Promise.all([
      ok(api().GET("/v2/webhook-secret")),
      ok(api().GET("/v2/webhook-deliveries", { params: { query: { page: 1, limit: 20 } } })),
    ]).then(([s, d]) => {
      setSecret(s);
      setDeliveries(d.data);
    }, setError);
  }, []);

  function save(e: FormEvent) {
    e.preventDefault();
    const value = url.trim();
    if (value && !/^https?:\/\//i.test(value)) {
      setNote("The URL must start with http:// or https://.");
      return;
    }
    setCallbackUrl(value);
    setNote(value ? "Saved: new replicas and videos made here will report to this URL." : "Cleared.");
  }

  return (
    <div className="page">
      <h1>Webhooks</h1>
      <ErrorBox error={error} />
      <div className="two">
        <form className="card" onSubmit={save} aria-labelledby="callback-title">
          <h2 id="callback-title">Callback URL</h2>
          <p className="muted">
            Each status change of a replica or video made from this browser is POSTed here, signed with your webhook secret.
          </p>
          <label htmlFor="callback-url">URL</label>
          <input id="callback-url" type="url" placeholder="https://example.com/doppel-hook" value={url} onChange={(e) => setUrl(e.target.value)} />
          <button type="submit">Save</button>
          <p role="status" className="muted">
            {note}
          </p>
        </form>
        <section className="card" aria-labelledby="secret-title">
          <h2 id="secret-title">Signing secret</h2>
          {secret ? (
            <>
              <p className="muted">
                Header <code>{secret.signature_header}</code>: <code className="break">{secret.scheme}</code>
              </p>
              <label htmlFor="webhook-secret">Secret</label>
              <input id="webhook-secret" readOnly type={reveal ? "text" : "password"} value={secret.webhook_secret} />
              <button type="button" className="secondary" onClick={() => setReveal(!reveal)}>
                {reveal ? "Hide" : "Show"} secret
              </button>
            </>
          ) : (
            <p className="muted">Loading…</p>
          )}
        </section>
      </div>
      <section className="card" aria-labelledby="deliveries-title">
        <h2 id="deliveries-title">Recent deliveries</h2>
        {deliveries?.length === 0 ? <p className="muted">No deliveries yet.</p> : null}
        {deliveries?.length ? (
          <div className="table-wrap">
            <table data-testid="deliveries">
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Event</th>
                  <th scope="col">URL</th>
                  <th scope="col">Status</th>
                  <th scope="col">Attempts</th>
                </tr>
              </thead>
              <tbody>
                {deliveries.map((d) => {
                  const s = deliveryState(d);
                  return (
                    <tr key={d.delivery_id}>
                      <td>{fmtDate(d.created_at)}</td>
                      <td>
                        {d.event} <code className="small">{d.object_id}</code>
                      </td>
                      <td className="small break">{d.url}</td>
                      <td>
                        <span className={`status ${s.tone}`}>{s.label}</span>
                        {d.last_error ? <p className="error-text small">{d.last_error}</p> : null}
                      </td>
                      <td>{d.attempts}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        ) : null}
      </section>
    </div>
  );
}
