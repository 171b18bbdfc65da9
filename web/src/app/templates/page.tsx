"use client";

import { useRouter } from "next/navigation";
import { useCallback, useEffect, useState } from "react";
import { capabilities } from "@/api/capabilities";
import { call, confirmDelete, listReplicas } from "@/api/client";
import type { Replica, Template, TemplateList } from "@/api/types";
import { BatchForm } from "@/components/BatchForm";
import { TemplateEditor } from "@/components/TemplateEditor";
import { DeleteButton, ErrorBox } from "@/components/ui";

export default function TemplatesPage() {
  const router = useRouter();
  const [replicas, setReplicas] = useState<Replica[]>([]);
  const [templates, setTemplates] = useState<Template[]>([]);
  // null until the API description is read: no "not offered" notice flashes meanwhile.
  const [enabled, setEnabled] = useState<{ templates: boolean | null; batches: boolean | null }>({
    templates: null,
    batches: null,
  });
  const [error, setError] = useState<unknown>(null);
  const [draft, setDraft] = useState("Hi {{first_name}}, thanks for joining {{company}}!");

  const load = useCallback(async () => {
    try {
      const caps = await capabilities();
      const on = { templates: caps.has("/v2/templates"), batches: caps.has("/v2/batches") };
      setEnabled(on);
      setReplicas(await listReplicas());
      if (on.templates) setTemplates((await call<TemplateList>("GET", "/v2/templates?page=1&limit=100")).data);
    } catch (err) {
      setError(err);
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  async function remove(t: Template) {
    try {
      if (await confirmDelete(`Delete template “${t.name}”?`, `/v2/templates/${t.template_id}`))
        setTemplates((xs) => xs.filter((x) => x.template_id !== t.template_id));
    } catch (err) {
      setError(err);
    }
  }

  return (
    <div className="page">
      <h1>Templates &amp; batches</h1>
      <p className="muted">
        A template is a script with <code>{"{{variables}}"}</code>; a batch makes one video per CSV row.
      </p>
      <ErrorBox error={error} />
      <div className="two">
        <TemplateEditor
          replicas={replicas}
          enabled={enabled.templates}
          script={draft}
          setScript={setDraft}
          onSaved={(t) => setTemplates((xs) => [t, ...xs])} />
        <div>
          <BatchForm
            templates={templates}
            draftScript={draft}
            enabled={enabled.batches}
            onCreated={(id) => router.push(`/batches/view/?id=${encodeURIComponent(id)}`)}
          />
          {templates.length ? (
            <section className="card" aria-labelledby="templates-list">
              <h2 id="templates-list">Your templates</h2>
              <ul className="list">
                {templates.map((t) => (
                  <li key={t.template_id} className="item">
                    <div className="grow">
                      <h3>{t.name}</h3>
                      <p className="muted small">{t.script}</p>
                    </div>
                    <DeleteButton what={`template ${t.name}`} onClick={() => remove(t)} />
                  </li>
                ))}
              </ul>
            </section>
          ) : null}
        </div>
      </div>
    </div>
  );
}
