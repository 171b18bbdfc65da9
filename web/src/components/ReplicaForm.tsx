"use client";

import { type FormEvent, useEffect, useRef, useState } from "react";
import { capabilities } from "@/api/capabilities";
import { call, upload } from "@/api/client";
import { getCallbackUrl } from "@/api/session";
import type { ConsentStatement } from "@/api/types";
import { ErrorBox, ProgressBar } from "./ui";

/** The sentence the person says at the start of the video; the server's own wording when it has one. */
function fallbackConsent(name: string): string {
  return `I, ${name || "[your full name]"}, consent to Doppel creating an AI replica of my face and voice from this video.`;
}

export function ReplicaForm({ onCreated }: { onCreated: (replicaId: string) => void }) {
  const [name, setName] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [consentFile, setConsentFile] = useState<File | null>(null);
  const [consentUpload, setConsentUpload] = useState(false);
  const [statement, setStatement] = useState(fallbackConsent(""));
  const [progress, setProgress] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const fileInput = useRef<HTMLInputElement>(null);

  useEffect(() => {
    let live = true;
    const t = setTimeout(async () => {
      const caps = await capabilities();
      if (live) setConsentUpload(caps.consentVideo);
      if (!caps.has("/v2/replicas/consent-statement")) {
        if (live) setStatement(fallbackConsent(name.trim()));
        return;
      }
      try {
        const q = encodeURIComponent(name.trim() || "[your full name]");
        const out = await call<ConsentStatement>("GET", `/v2/replicas/consent-statement?name=${q}`);
        if (live) setStatement(out.statement);
      } catch {
        if (live) setStatement(fallbackConsent(name.trim()));
      }
    }, 300);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [name]);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!file) return;
    setError(null);
    setProgress(0);
    const form = new FormData();
    form.append("train_video", file, file.name);
    form.append("replica_name", name.trim());
    const callback = getCallbackUrl();
    if (callback) form.append("callback_url", callback);
    if (consentFile) form.append("consent_video", consentFile, consentFile.name);
    try {
      const out = await upload<{ replica_id: string }>("/v2/replicas", form, setProgress);
      setFile(null);
      setConsentFile(null);
      setName("");
      if (fileInput.current) fileInput.current.value = "";
      onCreated(out.replica_id);
    } catch (err) {
      setError(err);
    } finally {
      setProgress(null);
    }
  }

  return (
    <form onSubmit={submit} className="card" aria-labelledby="new-replica">
      <h2 id="new-replica">New replica</h2>
      <label htmlFor="replica-name">Person&apos;s name</label>
      <input
        id="replica-name"
        value={name}
        onChange={(e) => setName(e.target.value)}
        required
        maxLength={200}
        autoComplete="name"
        aria-describedby="replica-name-help"
      />
      <p id="replica-name-help" className="hint">
        The person in the video; their name goes into the consent sentence below.
      </p>
      <div className="requirements" aria-label="What the training video needs">
        <h3>Before you record</h3>
        <ul>
          <li>
            <strong>Length:</strong> about 1 to 2 minutes (10 seconds at the very least; more material gives a better replica).
          </li>
          <li>
            <strong>One face:</strong> only you in the frame, facing the camera, well and evenly lit.
          </li>
          <li>
            <strong>Talking, then silent:</strong> speak naturally for the first half, then stay silent and still,
            looking at the camera, for the second half.
          </li>
          <li>
            <strong>Sound:</strong> a quiet room; the video must have its audio track.
          </li>
          <li>
            <strong>Consent:</strong> start by saying, clearly:
            <blockquote data-testid="consent-statement">{statement}</blockquote>
          </li>
        </ul>
      </div>
      <label htmlFor="train-video">Training video</label>
      <input
        id="train-video"
        ref={fileInput}
        type="file"
        accept="video/*"
        required
        onChange={(e) => setFile(e.target.files?.[0] ?? null)}
        aria-describedby="train-video-help"
      />
      <p id="train-video-help" className="hint">
        MP4, MOV or WebM with sound.
      </p>
      {consentUpload ? (
        <>
          <label htmlFor="consent-video">Separate consent video (optional)</label>
          <input id="consent-video" type="file" accept="video/*" onChange={(e) => setConsentFile(e.target.files?.[0] ?? null)} />
        </>
      ) : null}
      {progress !== null ? <ProgressBar value={progress * 100} label="Upload progress" /> : null}
      <ErrorBox error={error} hint="Check the video against the list above, then upload it again." />
      <button type="submit" disabled={progress !== null || !file || !name.trim()}>
        {progress !== null ? "Uploading…" : "Upload and train"}
      </button>
    </form>
  );
}
