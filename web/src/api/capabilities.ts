/**
 * What this server's API offers, read once from its OpenAPI document (`/schema/openapi.json`,
 * public). The app asks before calling a route that may not exist yet (SSE events, templates,
 * audio videos), so it never sends a request bound to fail (and the browser logs no 404).
 */
type Operation = { description?: string; requestBody?: { content?: Record<string, unknown> } };
type OpenApi = { paths?: Record<string, Record<string, Operation>> };

/** The operation takes a multipart form with `field`: in its schema, or said in its description
 * (handlers that read the form themselves have no multipart schema). */
function takesFile(op: Operation | undefined, field: string): boolean {
  if (!op) return false;
  const body = JSON.stringify(op.requestBody ?? {});
  const text = op.description ?? "";
  return (body.includes("multipart/form-data") && body.includes(`"${field}"`)) || (/multipart/i.test(text) && text.includes(`\`${field}\``));
}

export type Capabilities = {
  has(path: string): boolean;
  /** POST /v2/videos takes a multipart `audio` file. */
  videoAudio: boolean;
  /** POST /v2/replicas takes an optional `consent_video`. */
  consentVideo: boolean;
};

let loaded: Promise<Capabilities> | null = null;

export function capabilities(): Promise<Capabilities> {
  loaded ??= fetch("/schema/openapi.json")
    .then((r) => (r.ok ? (r.json() as Promise<OpenApi>) : {}))
    .catch(() => ({}) as OpenApi)
    .then((doc: OpenApi) => {
      const paths = doc.paths ?? {};
      return {
        has: (path: string) => path in paths,
        videoAudio: takesFile(paths["/v2/videos"]?.post, "audio"),
        consentVideo: takesFile(paths["/v2/replicas"]?.post, "consent_video"),
      };
    });
  return loaded;
}
