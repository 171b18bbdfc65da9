"use client";

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { Suspense, useEffect, useState } from "react";
import { api, fetchBlob, ok } from "@/api/client";
import type { Video } from "@/api/types";
import { useLiveVideo } from "@/components/VideoRow";
import { ErrorBox, ProgressBar, Status, fmtDate, saveBlob, useMediaUrl } from "@/components/ui";

function Player({ v }: { v: Video }) {
  const { src, error } = useMediaUrl(v.stream_url);
  if (error) return <ErrorBox error={error} hint="Reload the page to try again." />;
  if (!src) return <div className="player loading">Loading the video…</div>;
  return (
    <video className="player" data-testid="player" src={src} controls preload="metadata" playsInline>
      <track kind="captions" />
    </video>
  );
}

function VideoView({ id }: { id: string }) {
  const router = useRouter();
  const [initial, setInitial] = useState<Video | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState("");
  const v = useLiveVideo(initial);

  useEffect(() => {
    ok(api().GET("/v2/videos/{video_id}", { params: { path: { video_id: id } } })).then(setInitial, setError);
  }, [id]);

  const link = v?.hosted_url ?? v?.stream_url ?? "";

  async function copy() {
    try {
      await navigator.clipboard.writeText(link);
      setNote("Link copied.");
    } catch {
      setNote("Copy failed: select the link and copy it yourself.");
    }
  }

  async function download() {
    if (!v?.download_url) return;
    if (/[?&]t=/.test(v.download_url)) {
      window.location.href = v.download_url;
      return;
    }
    try {
      saveBlob(await fetchBlob(v.download_url), `${v.video_name || v.video_id}.mp4`);
    } catch (err) {
      setError(err);
    }
  }

  async function remove() {
    if (!v || !window.confirm("Delete this video and its files?")) return;
    try {
      await ok(api().DELETE("/v2/videos/{video_id}", { params: { path: { video_id: v.video_id } } }));
      router.push("/videos/");
    } catch (err) {
      setError(err);
    }
  }

  if (!v) return error ? <ErrorBox error={error} hint="Check the link, or go back to the list of videos." /> : <p className="muted">Loading…</p>;
  const title = v.video_name || v.video_id;
  return (
    <section aria-labelledby="video-title" className="card" data-testid="video-view" data-status={v.status}>
      <p>
        <Link href="/videos/">← All videos</Link>
      </p>
      <h1 id="video-title">{title}</h1>
      <p className="meta">
        <Status value={v.status} /> <span className="muted">{fmtDate(v.created_at)}</span>
        {v.duration_s ? <span className="muted"> · {v.duration_s.toFixed(1)} s</span> : null}
        <span className="muted"> · disclosure mark {v.disclosure_mark ? "on" : "off"}</span>
      </p>
      {v.status === "queued" || v.status === "generating" ? <ProgressBar value={v.progress} label="Rendering progress" /> : null}
      {v.status === "error" ? (
        <div className="error" role="alert">
          <p>{v.error_message ?? "Rendering failed."}</p>
          <p className="hint">Try again with a shorter script, or check the replica on the Replicas page.</p>
        </div>
      ) : null}
      {v.status === "ready" ? (
        <>
          <Player v={v} />
          <div className="actions row">
            <button type="button" onClick={download}>
              Download MP4
            </button>
            <button type="button" className="secondary" onClick={copy} disabled={!link}>
              Copy link
            </button>
            <input aria-label="Link to this video" readOnly value={link} onFocus={(e) => e.target.select()} />
          </div>
          <p role="status" className="muted">
            {note}
          </p>
        </>
      ) : null}
      <ErrorBox error={error} />
      <button type="button" className="danger" onClick={remove}>
        Delete video
      </button>
    </section>
  );
}

function FromQuery() {
  const id = useSearchParams()?.get("id") ?? "";
  return id ? <VideoView id={id} /> : <p>No video chosen. <Link href="/videos/">See all videos</Link>.</p>;
}

export default function VideoPage() {
  return (
    <Suspense>
      <FromQuery />
    </Suspense>
  );
}
