"use client";

import { type FormEvent, useEffect, useState } from "react";
import { capabilities } from "@/api/capabilities";
import { upload } from "@/api/client";
import { getCallbackUrl } from "@/api/session";
import type { Replica } from "@/api/types";
import { ErrorBox, ProgressBar } from "./ui";

export function VideoForm({ replicas, onCreated }: { replicas: Replica[]; onCreated: (videoId: string) => void }) {
  const ready = replicas.filter((r) => r.status === "completed");
  const [replicaId, setReplicaId] = useState("");
  const [source, setSource] = useState<"script" | "audio">("script");
  const [script, setScript] = useState("");
  const [audio, setAudio] = useState<File | null>(null);
  const [name, setName] = useState("");
  const [mark, setMark] = useState(true);
  const [audioOk, setAudioOk] = useState(false);
  const [busy, setBusy] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    void capabilities().then((c) => setAudioOk(c.videoAudio));
  }, []);
  useEffect(() => {
    if (!replicaId && ready[0]) setReplicaId(ready[0].replica_id);
  }, [ready, replicaId]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    setBusy(0);
    const callback = getCallbackUrl() || null;
    try {
      // One multipart form for both: the route reads JSON or a form, and a form can carry the
      // recording (the route's body is read by content type, so the schema has no body type).
      const form = new FormData();
      form.append("replica_id", replicaId);
      if (source === "audio" && audio) form.append("audio", audio, audio.name);
      else form.append("script", script);
      if (name.trim()) form.append("video_name", name.trim());
      form.append("disclosure_mark", String(mark));
      if (callback) form.append("callback_url", callback);
      const id = (await upload<{ video_id: string }>("/v2/videos", form, setBusy)).video_id;
      setScript("");
      setName("");
      setAudio(null);
      onCreated(id);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(null);
    }
  }

  const canSend = replicaId && (source === "script" ? script.trim() : audio) && busy === null;
  return (
    <form className="card" onSubmit={submit} aria-labelledby="new-video">
      <h2 id="new-video">New video</h2>
      {ready.length === 0 ? <p className="muted">A video needs a replica that has finished training.</p> : null}
      <label htmlFor="video-replica">Replica</label>
      <select id="video-replica" value={replicaId} onChange={(e) => setReplicaId(e.target.value)} required>
        {ready.length === 0 ? <option value="">No completed replica</option> : null}
        {ready.map((r) => (
          <option key={r.replica_id} value={r.replica_id}>
            {r.replica_name}
          </option>
        ))}
      </select>
      <fieldset className="choice">
        <legend>What the replica says</legend>
        <label>
          <input type="radio" name="source" value="script" checked={source === "script"} onChange={() => setSource("script")} /> A script
        </label>
        <label title={audioOk ? undefined : "This server does not take audio files yet"}>
          <input
            type="radio"
            name="source"
            value="audio"
            disabled={!audioOk}
            checked={source === "audio"}
            onChange={() => setSource("audio")}
          />{" "}
          An audio file{audioOk ? "" : " (not on this server yet)"}
        </label>
      </fieldset>
      {source === "script" ? (
        <>
          <label htmlFor="video-script">Script</label>
          <textarea id="video-script" rows={6} maxLength={10000} value={script} onChange={(e) => setScript(e.target.value)} required />
          <p className="hint">{script.length.toLocaleString()} / 10,000 characters</p>
        </>
      ) : (
        <>
          <label htmlFor="video-audio">Audio file</label>
          <input id="video-audio" type="file" accept="audio/*" required onChange={(e) => setAudio(e.target.files?.[0] ?? null)} />
        </>
      )}
      <label htmlFor="video-name">Video name (optional)</label>
      <input id="video-name" value={name} maxLength={200} onChange={(e) => setName(e.target.value)} />
      <label className="check">
        <input type="checkbox" checked={mark} onChange={(e) => setMark(e.target.checked)} /> Show the “AI-generated” disclosure
        mark on the video
      </label>
      {busy !== null && source === "audio" ? <ProgressBar value={busy * 100} label="Upload progress" /> : null}
      <ErrorBox error={error} />
      <button type="submit" disabled={!canSend}>
        {busy !== null ? "Sending…" : "Make video"}
      </button>
    </form>
  );
}
