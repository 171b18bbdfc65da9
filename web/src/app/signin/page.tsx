"use client";

import { useRouter, useSearchParams } from "next/navigation";
import { type FormEvent, Suspense, useState } from "react";
import { checkKey } from "@/api/client";
import { setKey } from "@/api/session";
import { ErrorBox } from "@/components/ui";

function SignIn() {
  const router = useRouter();
  const params = useSearchParams();
  const [key, setKeyValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await checkKey(key.trim());
      setKey(key.trim());
      const next = params?.get("next") ?? "";
      router.replace(next.startsWith("/") && !next.startsWith("//") ? next : "/replicas/");
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card narrow">
      <h1>Sign in</h1>
      <p className="muted">
        Use an API key of your Doppel server (an operator makes one with <code>make key TENANT=you</code>). It is kept in
        this browser tab only, and forgotten when the tab closes.
      </p>
      <form onSubmit={submit}>
        <label htmlFor="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autoComplete="off"
          required
          value={key}
          onChange={(e) => setKeyValue(e.target.value)}
          aria-describedby={error ? "signin-error" : undefined}
        />
        <div id="signin-error">
          <ErrorBox error={error} />
        </div>
        <button type="submit" disabled={busy || !key.trim()}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </section>
  );
}

export default function SignInPage() {
  return (
    <Suspense>
      <SignIn />
    </Suspense>
  );
}
