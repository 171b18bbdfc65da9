"use client";

import { type FormEvent, useMemo, useState } from "react";
import { upload } from "@/api/client";
import type { Template } from "@/api/types";
import { type Table, parseCsv } from "@/lib/csv";
import { rowProblems, variablesOf } from "@/lib/template";
import { ErrorBox, ProgressBar } from "./ui";

export function BatchForm({
  templates,
  draftScript,
  enabled,
  onCreated,
}: {
  templates: Template[];
  /** The script being written: its variables check a CSV before any template is saved. */
  draftScript: string;
  /** Whether the server has the route; null while its API description is still loading. */
  enabled: boolean | null;
  onCreated: (batchId: string) => void;
}) {
  const [templateId, setTemplateId] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [table, setTable] = useState<Table | null>(null);
  const [progress, setProgress] = useState<number | null>(null);
  const [error, setError] = useState<unknown>(null);
  const chosen = templates.find((t) => t.template_id === templateId) ?? templates[0];
  const variables = useMemo(
    () => (chosen ? (chosen.variables.length ? chosen.variables : variablesOf(chosen.script)) : variablesOf(draftScript)),
    [chosen, draftScript],
  );
  const problems = useMemo(() => (table ? rowProblems(variables, table.header, table.rows) : []), [table, variables]);

  async function choose(f: File | null) {
    setFile(f);
    setError(null);
    setTable(f ? parseCsv(await f.text()) : null);
  }

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!file || !chosen) return;
    setError(null);
    setProgress(0);
    const form = new FormData();
    form.append("template_id", chosen.template_id);
    form.append("rows_csv", file, file.name);
    try {
      const out = await upload<{ batch_id: string }>("/v2/batches", form, setProgress);
      onCreated(out.batch_id);
    } catch (err) {
      setError(err);
    } finally {
      setProgress(null);
    }
  }

  return (
    <form className="card" onSubmit={submit} aria-labelledby="batch-title">
      <h2 id="batch-title">Run a batch from a CSV</h2>
      <label htmlFor="batch-template">Template</label>
      <select id="batch-template" value={chosen?.template_id ?? ""} onChange={(e) => setTemplateId(e.target.value)} required>
        {templates.length === 0 ? <option value="">No templates yet</option> : null}
        {templates.map((t) => (
          <option key={t.template_id} value={t.template_id}>
            {t.name}
          </option>
        ))}
      </select>
      <p className="hint">
        Columns needed{chosen ? "" : " (by the script being written)"}: {variables.join(", ") || "none"}
      </p>
      <label htmlFor="batch-csv">CSV file (a header row naming the variables, then one row per video)</label>
      <input id="batch-csv" type="file" accept=".csv,text/csv" onChange={(e) => void choose(e.target.files?.[0] ?? null)} />
      {table ? (
        <div className="table-wrap">
          <table data-testid="csv-preview">
            <caption>
              {table.rows.length} rows{problems.length ? `, ${problems.length} with problems` : ", all complete"}
            </caption>
            <thead>
              <tr>
                <th scope="col">#</th>
                {table.header.map((h) => (
                  <th key={h} scope="col">
                    {h}
                  </th>
                ))}
                <th scope="col">Check</th>
              </tr>
            </thead>
            <tbody>
              {table.rows.map((cells, i) => {
                const problem = problems.find((p) => p.row === i + 1);
                return (
                  <tr key={i} className={problem ? "bad" : undefined} data-testid="csv-row">
                    <td>{i + 1}</td>
                    {table.header.map((h, j) => (
                      <td key={h}>{cells[j] ?? ""}</td>
                    ))}
                    <td>{problem ? <span className="error-text">{problem.message}</span> : "OK"}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : null}
      {problems.length ? (
        <p className="notice">Rows with problems will fail on their own; the other rows are still made.</p>
      ) : null}
      {progress !== null ? <ProgressBar value={progress * 100} label="Upload progress" /> : null}
      <ErrorBox error={error} />
      {enabled === false ? <p className="notice">This server does not run batches yet; you can check a CSV here.</p> : null}
      <button type="submit" disabled={enabled !== true || !file || !chosen || progress !== null || !table?.rows.length}>
        Start batch
      </button>
    </form>
  );
}
