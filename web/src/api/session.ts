/** The API key lives in sessionStorage: it goes when the tab closes, and never in a cookie. */
const KEY = "doppel.apiKey";
const CALLBACK = "doppel.callbackUrl";

export function getKey(): string | null {
  if (typeof window === "undefined") return null;
  return window.sessionStorage.getItem(KEY);
}

export function setKey(key: string): void {
  window.sessionStorage.setItem(KEY, key);
}

export function clearKey(): void {
  window.sessionStorage.removeItem(KEY);
}

/** The webhook URL new replicas and videos report to (a browser preference, see Webhooks). */
export function getCallbackUrl(): string {
  if (typeof window === "undefined") return "";
  return window.localStorage.getItem(CALLBACK) ?? "";
}

export function setCallbackUrl(url: string): void {
  if (url) window.localStorage.setItem(CALLBACK, url);
  else window.localStorage.removeItem(CALLBACK);
}
