"use client";

import { useRouter } from "next/navigation";
import { useCallback, useEffect, useState } from "react";
import { api, ok } from "@/api/client";
import type { Replica, Video } from "@/api/types";
import { VideoForm } from "@/components/VideoForm";
import { VideoRow } from "@/components/VideoRow";
import { ErrorBox } from "@/components/ui";

export default function VideosPage() {
  const router = useRouter();
  const [videos, setVideos] = useState<Video[] | null>(null);
  const [replicas, setReplicas] = useState<Replica[]>([]);
  const [error, setError] = useState<unknown>(null);

  const load = useCallback(async () => {
    try {
      const [v, r] = await Promise.all([
        ok(api().GET("/v2/videos", { params: { query: { page: 1, limit: 100 } } })),
        ok(api().GET("/v2/replicas", { params: { query: { page: 1, limit: 100 } } })),
      ]);
      setVideos(v.data);
      setReplicas(r.data);
    } catch (err) {
      setError(err);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  return (
    <div className="page two">
      <section aria-labelledby="videos-title">
        <h1 id="videos-title">Videos</h1>
        <ErrorBox error={error} />
        {videos === null && !error ? <p className="muted">Loading…</p> : null}
        {videos?.length === 0 ? <p className="muted">No videos yet.</p> : null}
        <ul className="list" aria-label="Your videos">
          {videos?.map((v) => (
            <VideoRow
              key={v.video_id}
              initial={v}
              onDelete={(id) => setVideos((xs) => xs?.filter((x) => x.video_id !== id) ?? null)}
            />
          ))}
        </ul>
      </section>
      <VideoForm replicas={replicas} onCreated={(id) => router.push(`/videos/view/?id=${encodeURIComponent(id)}`)} />
    </div>
  );
}
