"use client";

import { type FormEvent, useMemo, useState } from "react";
import { ApiError, call } from "@/api/client";
import type { Replica, ScriptOut, Template } from "@/api/types";
import { fill, variablesOf } from "@/lib/template";
import { ErrorBox } from "./ui";

export function TemplateEditor({
  replicas,
  enabled,
  script,
  setScript,
  onSaved,
}: {
  replicas: Replica[];
  /** Whether the server has the route; null while its API description is still loading. */
  enabled: boolean | null;
  script: string;
  setScript: (script: string) => void;
  onSaved: (t: Template) => void;
}) {
  const ready = replicas.filter((r) => r.status === "completed");
  const [name, setName] = useState("");
  const [replicaId, setReplicaId] = useState("");
  const [values, setValues] = useState<Record<string, string>>({});
  const [serverPreview, setServerPreview] = useState<string | null>(null);
  const [saved, setSaved] = useState<Template | null>(null);
  const [error, setError] = useState<unknown>(null);
  const variables = useMemo(() => variablesOf(script), [script]);
  const chosenReplica = replicaId || ready[0]?.replica_id || "";

  async function save(e: FormEvent) {
    e.preventDefault();
    setError(null);
    try {
      const t = await call<Template>("POST", "/v2/templates", { name: name.trim(), replica_id: chosenReplica, script });
      setSaved(t);
      onSaved(t);
    } catch (err) {
      setError(err);
    }
  }

  async function previewOnServer() {
    if (!saved) return;
    setError(null);
    try {
      const out = await call<ScriptOut>("POST", `/v2/templates/${saved.template_id}/preview`, { variables: values });
      setServerPreview(out.script);
    } catch (err) {
      setServerPreview(null);
      setError(err instanceof ApiError && err.status === 422 ? new ApiError(422, `Preview: ${err.detail}`) : err);
    }
  }

  return (
    <form className="card" onSubmit={save} aria-labelledby="template-title">
      <h2 id="template-title">Write a template</h2>
      <label htmlFor="template-name">Template name</label>
      <input id="template-name" value={name} onChange={(e) => setName(e.target.value)} required maxLength={200} />
      <label htmlFor="template-replica">Replica</label>
      <select id="template-replica" value={chosenReplica} onChange={(e) => setReplicaId(e.target.value)} required>
        {ready.length === 0 ? <option value="">No completed replica</option> : null}
        {ready.map((r) => (
          <option key={r.replica_id} value={r.replica_id}>
            {r.replica_name}
          </option>
        ))}
      </select>
      <label htmlFor="template-script">Script</label>
      <textarea
        id="template-script"
        rows={5}
        value={script}
        onChange={(e) => setScript(e.target.value)}
        aria-describedby="template-vars"
        required
      />
      <div id="template-vars" className="hint" aria-live="polite">
        {variables.length ? (
          <>
            Variables:{" "}
            {variables.map((v) => (
              <code key={v} className="chip" data-testid="variable">
                {v}
              </code>
            ))}
          </>
        ) : (
          <>No variables yet: write {"{{name}}"} where a row&apos;s value goes.</>
        )}
      </div>
      {variables.length ? (
        <fieldset className="preview">
          <legend>Preview one row</legend>
          {variables.map((v) => (
            <div key={v} className="field-inline">
              <label htmlFor={`var-${v}`}>{v}</label>
              <input id={`var-${v}`} value={values[v] ?? ""} onChange={(e) => setValues({ ...values, [v]: e.target.value })} />
            </div>
          ))}
          <p className="preview-text" data-testid="preview">
            {fill(script, values)}
          </p>
          {saved ? (
            <button type="button" className="secondary" onClick={previewOnServer}>
              Check this row with the server
            </button>
          ) : null}
          {serverPreview !== null ? <p className="preview-text">Server: {serverPreview}</p> : null}
        </fieldset>
      ) : null}
      <ErrorBox error={error} />
      {enabled === false ? <p className="notice">This server does not offer templates yet; you can write and preview, not save.</p> : null}
      <button type="submit" disabled={enabled !== true || !name.trim() || !chosenReplica || !script.trim()}>
        Save template
      </button>
      {saved ? <p role="status">Saved “{saved.name}”.</p> : null}
    </form>
  );
}
