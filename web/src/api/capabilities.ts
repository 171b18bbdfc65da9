/**
 * What this server's API offers, read once from its OpenAPI document (`/schema/openapi.json`,
 * public). The app asks before calling a route that may not exist yet (SSE events, templates,
 * audio videos), so it never sends a request bound to fail (and the browser logs no 404).
 */
type OpenApi = {
  paths?: Record<string, Record<string, { requestBody?: { content?: Record<string, unknown> } }>>;
};

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
      const videoPost = JSON.stringify(paths["/v2/videos"]?.post?.requestBody ?? {});
      const replicaPost = JSON.stringify(paths["/v2/replicas"]?.post?.requestBody ?? {});
      return {
        has: (path: string) => path in paths,
        videoAudio: videoPost.includes("multipart/form-data") && videoPost.includes('"audio"'),
        consentVideo: replicaPost.includes("consent_video"),
      };
    });
  return loaded;
}
