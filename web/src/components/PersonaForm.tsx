"use client";

import { type FormEvent, useMemo, useState } from "react";
import { call } from "@/api/client";
import type { Persona, Replica } from "@/api/types";
import { ErrorBox } from "./ui";

/** The tools box: empty, or a JSON list of OpenAI function definitions. A problem is named
 * before anything is sent (the server checks each tool again). */
export function toolsProblem(text: string): string | null {
  if (!text.trim()) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return `Tools are not valid JSON: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (!Array.isArray(parsed)) return 'Tools must be a JSON list: [{"type": "function", "function": {"name": ...}}].';
  const bad = parsed.findIndex((t) => !t || typeof t !== "object" || t.type !== "function" || typeof t.function?.name !== "string");
  return bad >= 0 ? `Tool ${bad + 1} needs "type": "function" and a "function" with a "name".` : null;
}

export function PersonaForm({ replicas, onSaved }: { replicas: Replica[]; onSaved: (p: Persona) => void }) {
  const ready = replicas.filter((r) => r.status === "completed");
  const [name, setName] = useState("");
  const [prompt, setPrompt] = useState("");
  const [context, setContext] = useState("");
  const [replicaId, setReplicaId] = useState("");
  const [model, setModel] = useState("");
  const [baseUrl, setBaseUrl] = useState("");
  const [apiKey, setApiKey] = useState("");
  const [tools, setTools] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState<Persona | null>(null);
  const problem = useMemo(() => toolsProblem(tools), [tools]);

  async function save(e: FormEvent) {
    e.preventDefault();
    setError(null);
    const llm: Record<string, unknown> = {};
    if (model.trim()) llm.model = model.trim();
    if (baseUrl.trim()) llm.base_url = baseUrl.trim();
    if (apiKey) llm.api_key = apiKey;
    if (tools.trim()) llm.tools = JSON.parse(tools);
    const body: Record<string, unknown> = { persona_name: name.trim(), system_prompt: prompt, context };
    if (replicaId) body.default_replica_id = replicaId;
    if (Object.keys(llm).length) body.layers = { llm };
    try {
      const p = await call<Persona>("POST", "/v2/personas", body);
      setSaved(p);
      setApiKey(""); // not kept in the page once the server has it
      onSaved(p);
    } catch (err) {
      setError(err);
    }
  }

  return (
    <form className="card" onSubmit={save} aria-labelledby="persona-title">
      <h2 id="persona-title">New persona</h2>
      <label htmlFor="persona-name">Persona name</label>
      <input id="persona-name" value={name} onChange={(e) => setName(e.target.value)} maxLength={200} />
      <label htmlFor="persona-prompt">System prompt</label>
      <textarea id="persona-prompt" rows={4} value={prompt} onChange={(e) => setPrompt(e.target.value)} required />
      <label htmlFor="persona-context">Context</label>
      <textarea id="persona-context" rows={3} value={context} onChange={(e) => setContext(e.target.value)} />
      <label htmlFor="persona-replica">Default replica</label>
      <select id="persona-replica" value={replicaId} onChange={(e) => setReplicaId(e.target.value)}>
        <option value="">None (each conversation names one)</option>
        {ready.map((r) => (
          <option key={r.replica_id} value={r.replica_id}>
            {r.replica_name}
          </option>
        ))}
      </select>
      <fieldset>
        <legend>LLM (any OpenAI-compatible endpoint; empty: the platform&apos;s own)</legend>
        <label htmlFor="persona-model">Model</label>
        <input id="persona-model" value={model} onChange={(e) => setModel(e.target.value)} maxLength={200} />
        <label htmlFor="persona-base-url">Base URL</label>
        <input id="persona-base-url" type="url" value={baseUrl} onChange={(e) => setBaseUrl(e.target.value)} placeholder="https://api.example.com/v1" />
        <label htmlFor="persona-key">API key</label>
        <input id="persona-key" type="password" autoComplete="off" value={apiKey} onChange={(e) => setApiKey(e.target.value)} aria-describedby="persona-key-hint" />
        <p id="persona-key-hint" className="hint">
          Stored on the server; only its last four characters are ever shown again.
        </p>
        <label htmlFor="persona-tools">Tools (JSON, OpenAI function definitions)</label>
        <textarea id="persona-tools" rows={4} value={tools} onChange={(e) => setTools(e.target.value)} aria-describedby="persona-tools-problem" />
        <p id="persona-tools-problem" className={problem ? "error" : "hint"} aria-live="polite" data-testid="tools-problem">
          {problem ?? "Optional."}
        </p>
      </fieldset>
      <ErrorBox error={error} />
      <button type="submit" disabled={!prompt.trim() || problem !== null}>
        Save persona
      </button>
      {saved ? <p role="status">Saved “{saved.persona_name}”.</p> : null}
    </form>
  );
}
