// The console's only way to the server: the OpenAI-compatible HTTP API under /v1, with
// the API key the person logged in with. Errors keep OpenAI's envelope.

// The key lives in sessionStorage only: gone when the tab closes, and never readable by
// another tab (the same origin also serves /docs, whose Swagger UI loads from a CDN).
const KEY_STORAGE = "rft-console-key";

export function savedKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function saveKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
    this.lines = error.lines || null;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function parse(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: { message: text.slice(0, 500) || `HTTP ${response.status}` } };
  }
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, body);
  }
  return body;
}

export async function request(method, path, body, key = savedKey()) {
  const headers = { Authorization: `Bearer ${key}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return parse(await fetch(`/v1${path}`, init));
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

/** Every page of a cursor list (OpenAI's has_more / last_id), up to `max` items. */
export async function listAll(path, max = 10000) {
  const items = [];
  let after = "";
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
    items.push(...page.data);
    if (!page.has_more || items.length >= max || !page.last_id) return items;
    after = page.last_id;
  }
}

/** Upload with progress (fetch cannot report upload progress; XMLHttpRequest can). */
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${savedKey()}`);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = { error: { message: xhr.responseText.slice(0, 500) } };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) onUnauthorized();
        reject(new ApiError(xhr.status, body));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: "the upload did not reach the server" } }));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

/** The first `count` rows of a stored JSONL file, parsed. */
export async function fileRows(fileId, count = 5) {
  const response = await fetch(`/v1/files/${encodeURIComponent(fileId)}/content`, {
    headers: { Authorization: `Bearer ${savedKey()}` },
  });
  if (!response.ok) return parse(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const rows = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (value) text += decoder.decode(value, { stream: true });
    const lines = text.split("\n");
    text = done ? "" : lines.pop();
    for (const line of lines) {
      if (line.trim()) rows.push(JSON.parse(line));
      if (rows.length >= count) {
        reader.cancel();
        return rows;
      }
    }
    if (done) return rows;
  }
}
