// The page's only way to the service: the public API with the user's bearer token.
// The token lives in sessionStorage (gone when the tab closes), never in a cookie or a URL
// that reaches the server.

const TOKEN_KEY = "edgecatalog.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || "";
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// A token handed over in the fragment (/#token=...) is stored, then wiped from the address
// bar and history so it is not bookmarked or shown over someone's shoulder.
export function takeTokenFromFragment() {
  const hash = location.hash.startsWith("#") ? location.hash.slice(1) : "";
  const token = new URLSearchParams(hash).get("token");
  if (!token) return false;
  setToken(token.trim());
  history.replaceState(history.state, "", location.pathname + location.search);
  return true;
}

// Decoded for display only (read-only badge); the server decides what a token may do.
export function tokenScopes() {
  try {
    const part = getToken().split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part));
    const raw = claims.scope ?? claims.scopes ?? "read";
    return Array.isArray(raw) ? raw : String(raw).split(/\s+/);
  } catch {
    return [];
  }
}

export async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "NETWORK_ERROR", "The device did not answer (network error).");
  }
  let payload = null;
  if (response.status !== 204) {
    try {
      payload = await response.json();
    } catch {
      payload = null;
    }
  }
  if (!response.ok || (payload && payload.success === false)) {
    const err = (payload && payload.error) || {};
    throw new ApiError(response.status, err.code || `HTTP_${response.status}`,
      err.message || `${method} ${path} failed with HTTP ${response.status}`, err.details);
  }
  return payload || { success: true, data: null };
}

// Health-style endpoints may answer without the envelope, and with 503 while still carrying
// a useful body; both are returned as data rather than thrown.
export async function probe(path) {
  const headers = { Accept: "application/json" };
  if (getToken()) headers.Authorization = `Bearer ${getToken()}`;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch {
    return { available: false, reason: "no answer" };
  }
  if (response.status === 404) return { available: false, reason: "unavailable" };
  if (response.status === 401 || response.status === 403) {
    return { available: false, reason: "not allowed" };
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    return { available: false, reason: "unavailable" };
  }
  const data = body && typeof body === "object" && "data" in body && body.data ? body.data : body;
  return { available: true, status: response.status, data };
}

// The message a person should read for a failed call.
export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 403) {
    return `${err.message}. Review actions need a token with the write scope ` +
      "(edgecatalog token --ui --scope write).";
  }
  if (err.status === 404 && /no such route/.test(err.message)) {
    return "This action is not available on this device (the API has no such endpoint).";
  }
  return err.details ? `${err.message} (${err.details})` : err.message;
}

// The same-origin path of a signed image URL: the page only loads images from its own
// origin (CSP img-src 'self'), even when public_url names the device differently.
export function localPath(url) {
  if (!url) return "";
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

// /files/7?expires=..&signature=..  ->  /files/7/thumbnail?expires=..&signature=..&size=N
export function thumbnailPath(imageUrl, size) {
  if (!imageUrl) return "";
  const parsed = new URL(imageUrl, location.href);
  const params = new URLSearchParams(parsed.search);
  params.set("size", String(size));
  return `${parsed.pathname.replace(/\/$/, "")}/thumbnail?${params}`;
}
