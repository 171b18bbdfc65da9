/**
 * Every call to the Doppel API goes through this module: typed by the generated schema where the
 * route is in it (openapi-fetch), `x-api-key` from the session, errors as `ApiError` carrying the
 * server's `detail` (a sentence a person can act on).
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { paths } from "./schema";
import { clearKey, getKey } from "./session";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(detail);
  }
}

/** What to tell a person for a failed call: the API's `detail`, or what went wrong around it. */
export function messageOf(err: unknown): string {
  if (err instanceof ApiError) return err.detail;
  if (err instanceof TypeError) return "The server could not be reached. Check that Doppel is running, then try again.";
  return err instanceof Error ? err.message : String(err);
}

function origin(): string {
  return typeof window === "undefined" ? "http://localhost" : window.location.origin;
}

function detailOf(body: unknown): string | null {
  if (body && typeof body === "object" && "detail" in body) {
    const d = (body as { detail: unknown }).detail;
    return typeof d === "string" ? d : JSON.stringify(d);
  }
  return null;
}

/** `body`: the error body when already read (openapi-fetch reads it); else read here. */
async function errorOf(response: Response, body?: unknown): Promise<ApiError> {
  let detail = `${response.status} ${response.statusText}`.trim();
  if (body === undefined && !response.bodyUsed) {
    try {
      body = await response.clone().json();
    } catch {
      // Not JSON (a proxy's error page): keep the status line.
    }
  }
  detail = detailOf(body) ?? detail;
  if (response.status === 401) {
    clearKey();
    detail = `This API key was not accepted (${detail}). Sign in again with a valid key.`;
  }
  if (response.status === 403) detail = `This API key has been revoked (${detail}). Ask for a new key.`;
  if (response.status === 503) detail = `${detail} The service is busy or starting; try again in a moment.`;
  return new ApiError(response.status, detail);
}

function authHeaders(key = getKey()): Record<string, string> {
  return key ? { "x-api-key": key } : {};
}

const auth: Middleware = {
  onRequest({ request }) {
    const key = getKey();
    if (key) request.headers.set("x-api-key", key);
    return request;
  },
};

let typed: ReturnType<typeof createClient<paths>> | null = null;

/** The openapi-fetch client: `api().GET("/v2/replicas", ...)`, paths and bodies type-checked. */
export function api() {
  if (typed === null) {
    typed = createClient<paths>({ baseUrl: origin() });
    typed.use(auth);
  }
  return typed;
}

/** The data of an openapi-fetch result, or an `ApiError` with the server's detail. */
export async function ok<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (!response.ok) throw await errorOf(response, error);
  return data as T;
}

/**
 * A call by path string (paths built at run time, or bodies the route reads by content type);
 * `T` is always one of the generated shapes of ./types, so answers stay typed from the schema.
 */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: authHeaders() };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { ...authHeaders(), "content-type": "application/json" };
  }
  const response = await fetch(origin() + path, init);
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

/** Check a key without keeping it: resolves when the API accepts it. */
export async function checkKey(key: string): Promise<void> {
  const response = await fetch(`${origin()}/v2/replicas?page=1&limit=1`, { headers: authHeaders(key) });
  if (response.status === 401)
    throw new ApiError(401, "That API key was not recognised. Check that you pasted the whole key, exactly as `make key` printed it, and try again.");
  if (response.status === 403) throw new ApiError(403, "That API key has been revoked. Ask your operator for a new key.");
  if (!response.ok) throw await errorOf(response);
}

/**
 * A multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
 * `onProgress` gets 0..1.
 */
export function upload<T>(path: string, form: FormData, onProgress: (fraction: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", origin() + path);
    const key = getKey();
    if (key) xhr.setRequestHeader("x-api-key", key);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onerror = () => reject(new TypeError("network error"));
    xhr.onload = () => {
      const response = new Response(xhr.responseText || null, {
        status: xhr.status,
        statusText: xhr.statusText,
        headers: { "content-type": xhr.getResponseHeader("content-type") ?? "" },
      });
      if (response.ok) {
        onProgress(1);
        resolve(response.json() as Promise<T>);
      } else errorOf(response).then(reject, reject);
    };
    xhr.send(form);
  });
}

/** Download a file behind the API key (results CSV, a video without a tokenised link). */
export async function fetchBlob(url: string): Promise<Blob> {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}

/** The tenant's replicas (the first 100, newest first): what a form offers to choose from. */
export async function listReplicas() {
  return (await ok(api().GET("/v2/replicas", { params: { query: { page: 1, limit: 100 } } }))).data;
}

/** DELETE `path` once the person confirms `question`; false when they did not. */
export async function confirmDelete(question: string, path: string): Promise<boolean> {
  if (!window.confirm(question)) return false;
  await call("DELETE", path);
  return true;
}
