/** `{{variables}}` in a script, in order of first appearance (the API's template syntax). */
const VARIABLE = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

export function variablesOf(script: string): string[] {
  const seen: string[] = [];
  for (const m of script.matchAll(VARIABLE)) {
    const name = m[1];
    if (name && !seen.includes(name)) seen.push(name);
  }
  return seen;
}

/** The script with each variable filled in; missing ones are left as `{{name}}`. */
export function fill(script: string, values: Record<string, string>): string {
  return script.replace(VARIABLE, (whole, name: string) => values[name] ?? whole);
}

export type RowProblem = { row: number; message: string };

/** What is wrong with each CSV row before it is sent: a missing or empty variable. */
export function rowProblems(variables: string[], header: string[], rows: string[][]): RowProblem[] {
  const problems: RowProblem[] = [];
  const absent = variables.filter((v) => !header.includes(v));
  rows.forEach((cells, i) => {
    if (absent.length) {
      problems.push({ row: i + 1, message: `The CSV has no column ${absent.map((a) => `"${a}"`).join(", ")}.` });
      return;
    }
    const empty = variables.filter((v) => !(cells[header.indexOf(v)] ?? "").trim());
    if (empty.length) problems.push({ row: i + 1, message: `Missing ${empty.join(", ")}.` });
  });
  return problems;
}
