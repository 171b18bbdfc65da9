"use client";

import { useEffect, useState } from "react";
import { fetchBlob, messageOf } from "@/api/client";

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const pct = Math.max(0, Math.min(100, Math.round(value)));
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
      <div className="bar" style={{ width: `${pct}%` }} />
      <span className="pct">{pct}%</span>
    </div>
  );
}

const TONE: Record<string, string> = {
  completed: "ok",
  active: "ok",
  ready: "ok",
  started: "busy",
  queued: "busy",
  generating: "busy",
  running: "busy",
  error: "bad",
  failed: "bad",
};

export function Status({ value }: { value: string }) {
  return <span className={`status ${TONE[value] ?? ""}`}>{value}</span>;
}

/** An error with what to do about it; `role=alert` so screen readers announce it. */
export function ErrorBox({ error, hint }: { error: unknown; hint?: string }) {
  if (error === null || error === undefined) return null;
  return (
    <div className="error" role="alert">
      <p>{messageOf(error)}</p>
      {hint ? <p className="hint">{hint}</p> : null}
    </div>
  );
}

/**
 * A URL a `<video>` or `<img>` can load. Links the API signs (`?t=<token>`) load directly, with
 * Range requests; an unsigned link is fetched with the API key into an object URL (still seekable:
 * the whole file is in memory).
 */
export function useMediaUrl(url: string | null | undefined): { src: string | null; error: unknown } {
  const [src, setSrc] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    setError(null);
    if (!url) {
      setSrc(null);
      return;
    }
    if (/[?&]t=/.test(url)) {
      setSrc(url);
      return;
    }
    let objectUrl: string | null = null;
    let live = true;
    fetchBlob(url).then(
      (blob) => {
        if (!live) return;
        objectUrl = URL.createObjectURL(blob);
        setSrc(objectUrl);
      },
      (err: unknown) => live && setError(err),
    );
    return () => {
      live = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [url]);
  return { src, error };
}

export function Thumb({ url, alt }: { url: string | null | undefined; alt: string }) {
  const { src } = useMediaUrl(url);
  // Plain <img>: a static export has no image optimiser, and object URLs cannot be optimised.
  // eslint-disable-next-line @next/next/no-img-element
  return src ? <img className="thumb" src={src} alt={alt} /> : <div className="thumb empty" aria-hidden="true" />;
}

export function fmtDate(iso: string | null | undefined): string {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function saveBlob(blob: Blob, filename: string): void {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** A list item's Delete button, named for screen readers by what it deletes. */
export function DeleteButton({ what, onClick }: { what: string; onClick: () => void }) {
  return (
    <button type="button" className="secondary" onClick={onClick} aria-label={`Delete ${what}`}>
      Delete
    </button>
  );
}
