"use client";

import Link from "next/link";
import { useEffect, useState } from "react";
import { capabilities } from "@/api/capabilities";
import { call, confirmDelete, listReplicas } from "@/api/client";
import type { Persona, PersonaList, Replica } from "@/api/types";
import { PersonaForm } from "@/components/PersonaForm";
import { DeleteButton, ErrorBox, fmtDate } from "@/components/ui";

function ContextEditor({ persona, onSaved }: { persona: Persona; onSaved: (p: Persona) => void }) {
  const [text, setText] = useState(persona.context);
  const [error, setError] = useState<unknown>(null);
  async function save() {
    setError(null);
    try {
      // JSON Patch, as the API takes edits: only the context changes.
      onSaved(await call<Persona>("PATCH", `/v2/personas/${persona.persona_id}`, [{ op: "replace", path: "/context", value: text }]));
    } catch (err) {
      setError(err);
    }
  }
  const id = `context-${persona.persona_id}`;
  return (
    <div>
      <label htmlFor={id}>Context of {persona.persona_name}</label>
      <textarea id={id} rows={2} value={text} onChange={(e) => setText(e.target.value)} />
      <ErrorBox error={error} />
      <button type="button" className="secondary" onClick={save} disabled={text === persona.context}>
        Save context
      </button>
    </div>
  );
}

function PersonaItem({ persona: p, onSaved, onDelete }: { persona: Persona; onSaved: (p: Persona) => void; onDelete: () => void }) {
  const llm = (p.layers as { llm?: { model?: string; api_key?: string; tools?: unknown[] } }).llm;
  return (
    <li className="item" data-testid="persona">
      <div className="grow">
        <h3>{p.persona_name}</h3>
        <p className="muted small">{p.system_prompt}</p>
        <p className="small">
          LLM: {llm?.model ?? "the platform's own"}
          {llm?.api_key ? <> · key <code data-testid="masked-key">{llm?.api_key}</code></> : null}
          {llm?.tools?.length ? <> · {llm?.tools?.length} tool(s)</> : null} · {fmtDate(p.updated_at)}
        </p>
        <ContextEditor persona={p} onSaved={onSaved} />
      </div>
      <DeleteButton what={`persona ${p.persona_name}`} onClick={onDelete} />
    </li>
  );
}

export default function PersonasPage() {
  const [replicas, setReplicas] = useState<Replica[]>([]);
  const [personas, setPersonas] = useState<Persona[]>([]);
  const [enabled, setEnabled] = useState<boolean | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    (async () => {
      const on = (await capabilities()).has("/v2/personas");
      setEnabled(on);
      setReplicas(await listReplicas());
      if (on) setPersonas((await call<PersonaList>("GET", "/v2/personas?page=1&limit=100")).data);
    })().catch(setError);
  }, []);

  const remove = (p: Persona) =>
    confirmDelete(`Delete persona “${p.persona_name}”?`, `/v2/personas/${p.persona_id}`)
      .then((gone) => gone && setPersonas((xs) => xs.filter((x) => x.persona_id !== p.persona_id)))
      .catch(setError);

  const replace = (p: Persona) => setPersonas((xs) => xs.map((x) => (x.persona_id === p.persona_id ? p : x)));

  return (
    <div className="page">
      <h1>Personas</h1>
      <p className="muted">
        A persona is what a replica is told in a live conversation, and which LLM answers for it. Start a call with one on
        the <Link href="/calls/">Conversations</Link> page.
      </p>
      <ErrorBox error={error} />
      {enabled === false ? <p className="notice">This server does not offer personas yet.</p> : null}
      <div className="two">
        {enabled ? <PersonaForm replicas={replicas} onSaved={(p) => setPersonas((xs) => [p, ...xs])} /> : <div />}
        {personas.length ? (
          <section className="card" aria-labelledby="personas-list">
            <h2 id="personas-list">Your personas</h2>
            <ul className="list">
              {personas.map((p) => (
                <PersonaItem key={p.persona_id} persona={p} onSaved={replace} onDelete={() => remove(p)} />
              ))}
            </ul>
          </section>
        ) : null}
      </div>
    </div>
  );
}
