"use client";

import Link from "next/link";
import { useEffect, useState } from "react";
import { api, ok } from "@/api/client";
import { watch } from "@/api/live";
import type { Video } from "@/api/types";
import { ErrorBox, ProgressBar, Status, Thumb, fmtDate } from "./ui";

export const videoDone = (v: Video) => v.status === "ready" || v.status === "error";

/** A video's live status: follows it until it is ready or failed. */
export function useLiveVideo(initial: Video | null): Video | null {
  const [v, setV] = useState(initial);
  useEffect(() => setV(initial), [initial]);
  const id = initial?.video_id;
  const done = initial ? videoDone(initial) : true;
  useEffect(() => {
    if (!id || done) return;
    const stop = new AbortController();
    void watch<Video>(`/v2/videos/${id}`, setV, videoDone, stop.signal);
    return () => stop.abort();
  }, [id, done]);
  return v;
}

export function VideoRow({ initial, onDelete }: { initial: Video; onDelete: (id: string) => void }) {
  const v = useLiveVideo(initial) ?? initial;
  const [error, setError] = useState<unknown>(null);
  const title = v.video_name || v.video_id;

  async function remove() {
    if (!window.confirm(`Delete video “${title}” and its files?`)) return;
    try {
      await ok(api().DELETE("/v2/videos/{video_id}", { params: { path: { video_id: v.video_id } } }));
      onDelete(v.video_id);
    } catch (err) {
      setError(err);
    }
  }

  return (
    <li className="item" data-testid="video" data-status={v.status}>
      <Thumb url={v.thumbnail_url} alt={title} />
      <div className="grow">
        <h3>
          <Link href={`/videos/view/?id=${encodeURIComponent(v.video_id)}`}>{title}</Link>
        </h3>
        <p className="meta">
          <Status value={v.status} /> <span className="muted">{fmtDate(v.created_at)}</span>
          {v.duration_s ? <span className="muted"> · {v.duration_s.toFixed(1)} s</span> : null}
        </p>
        {v.status === "queued" || v.status === "generating" ? <ProgressBar value={v.progress} label={`Rendering ${title}`} /> : null}
        {v.status === "error" ? <p className="error-text">{v.error_message}</p> : null}
        <ErrorBox error={error} />
      </div>
      <div className="actions">
        <button type="button" className="secondary" onClick={remove} aria-label={`Delete video ${title}`}>
          Delete
        </button>
      </div>
    </li>
  );
}
