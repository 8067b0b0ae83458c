import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import { request, saveKey } from "../api.js";

const OPEN_SERVER_KEY = "no-key-needed";

export function LoginPage({ onLogin }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  // A server without --api-keys-file (make demo's) takes any key: go straight in.
  useEffect(() => {
    fetch("/v1/models").then((response) => {
      if (response.ok) {
        saveKey(OPEN_SERVER_KEY);
        onLogin(OPEN_SERVER_KEY);
      }
    });
  }, []);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      await request("GET", "/models", undefined, key.trim());
      saveKey(key.trim());
      onLogin(key.trim());
    } catch (err) {
      setError(err.status === 401 ? "This key is not valid on this server." : err.message);
    } finally {
      setBusy(false);
    }
  }

  return html`
    <main id="main" class="login" tabindex="-1">
      <h1 tabindex="-1">RFT console</h1>
      <p>Log in with an API key from your operator. The key sees only its own tenant's files, jobs and models.</p>
      <form onSubmit=${submit}>
        <label for="api-key">API key</label>
        <input
          id="api-key"
          type="password"
          autocomplete="current-password"
          required
          value=${key}
          onInput=${(e) => setKey(e.target.value)}
        />
        ${error && html`<p class="error" role="alert">${error}</p>`}
        <button type="submit" disabled=${busy}>${busy ? "Checking…" : "Log in"}</button>
      </form>
    </main>
  `;
}
