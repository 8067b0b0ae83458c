import { render } from "preact";
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { forgetKey, savedKey, setUnauthorizedHandler } from "./api.js";
import { LoginPage } from "./pages/login.js";
import { FilesPage } from "./pages/files.js";
import { GradersPage } from "./pages/graders.js";
import { JobsPage } from "./pages/jobs.js";
import { NewJobPage } from "./pages/new_job.js";
import { JobPage } from "./pages/job.js";
import { EvaluatePage } from "./pages/evaluate.js";

const NAV = [
  ["#/files", "Files"],
  ["#/graders", "Graders"],
  ["#/jobs/new", "New job"],
  ["#/jobs", "Jobs"],
  ["#/evaluate", "Evaluate"],
];

function currentRoute() {
  const hash = location.hash || "#/jobs";
  const [path, query = ""] = hash.slice(1).split("?");
  return { path, params: new URLSearchParams(query) };
}

function page(route) {
  const { path, params } = route;
  if (path === "/files") return html`<${FilesPage} />`;
  if (path === "/graders") return html`<${GradersPage} />`;
  if (path === "/jobs/new") return html`<${NewJobPage} params=${params} />`;
  const job = path.match(/^\/jobs\/([\w-]+)$/);
  if (job) return html`<${JobPage} key=${job[1]} jobId=${job[1]} />`;
  if (path === "/evaluate") return html`<${EvaluatePage} params=${params} />`;
  return html`<${JobsPage} />`;
}

function App() {
  const [key, setKey] = useState(savedKey());
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const onHash = () => setRoute(currentRoute());
    addEventListener("hashchange", onHash);
    setUnauthorizedHandler(() => {
      forgetKey();
      setKey("");
    });
    return () => removeEventListener("hashchange", onHash);
  }, []);
  const firstRoute = useRef(true);
  useEffect(() => {
    // On a move to another page, focus its heading so keyboard and screen-reader users land
    // on it; on the first page shown, leave focus alone ("Skip to content" comes first).
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    const heading = document.querySelector("main h1");
    if (heading) heading.focus({ preventScroll: true });
  }, [route.path]);
  if (!key) return html`<${LoginPage} onLogin=${setKey} />`;
  const active = (href) => route.path === href.slice(1) || (href === "#/jobs" && /^\/jobs\/(?!new)/.test(route.path));
  return html`
    <a class="skip" href="#main" onClick=${(e) => (e.preventDefault(), document.getElementById("main").focus())}
      >Skip to content</a
    >
    <header class="top">
      <a class="brand" href="#/jobs">RFT console</a>
      <nav aria-label="Main">
        <ul>
          ${NAV.map(
            ([href, label]) =>
              html`<li><a href=${href} aria-current=${active(href) ? "page" : undefined}>${label}</a></li>`,
          )}
        </ul>
      </nav>
      <button class="link logout" onClick=${() => (forgetKey(), setKey(""))}>Log out</button>
    </header>
    <main id="main" tabindex="-1">${page(route)}</main>
  `;
}

render(html`<${App} />`, document.getElementById("app"));
