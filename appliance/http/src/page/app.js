// The operator's page: worklist, study, system, bundles, access. Served by the
// appliance, nothing from the network. Every value from a study (patient
// names, accession numbers) is untrusted and set as text, never as HTML.
"use strict";

const state = { csrf: null, user: null, role: null, timer: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function view(...children) {
  const main = document.getElementById("view");
  main.replaceChildren(...children);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  const response = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (response.status === 401 && !path.endsWith("/login")) {
    state.user = null;
    location.hash = "#/login";
    throw new Error("please log in");
  }
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  return { status: response.status, body };
}

function errorText(body) {
  if (body && body.error) return `${body.error.code}: ${body.error.message}`;
  return typeof body === "string" ? body : JSON.stringify(body);
}

function time(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// ---- login ----------------------------------------------------------------

function showLogin(message) {
  document.getElementById("nav").hidden = true;
  const error = el("p", { id: "login-error", class: "error" }, message || "");
  const form = el("form", { class: "login", id: "login" },
    el("h2", {}, "Log in"),
    el("label", {}, "User", el("input", { id: "user", name: "user", autocomplete: "username", required: "" })),
    el("label", {}, "Password", el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: "" })),
    el("button", { id: "login-submit", type: "submit" }, "Log in"),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = document.getElementById("user").value;
    const password = document.getElementById("password").value;
    const r = await api("/api/v1/login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, password }) });
    if (r.status !== 200) {
      error.textContent = errorText(r.body);
      return;
    }
    Object.assign(state, { csrf: r.body.csrf, user: r.body.user, role: r.body.role });
    location.hash = "#/worklist";
    route();
  });
  view(form);
}

async function ensureSession() {
  if (state.user) return true;
  try {
    const r = await api("/api/v1/session");
    if (r.status !== 200 || !r.body.csrf) return false;
    Object.assign(state, { csrf: r.body.csrf, user: r.body.user, role: r.body.role });
    return true;
  } catch (e) {
    return false;
  }
}

// ---- worklist ---------------------------------------------------------------

const STATUSES = ["", "queued", "processing", "decision", "undecided", "abstention", "refused", "failed"];

function uploadForm() {
  const result = el("p", { id: "upload-result" });
  const input = el("input", { id: "study-files", type: "file", multiple: "", accept: ".dcm,application/dicom" });
  const button = el("button", { id: "upload", type: "button" }, "Send to the appliance");
  button.addEventListener("click", async () => {
    if (!input.files.length) { result.textContent = "Choose one or more DICOM files first."; return; }
    const boundary = "cxr-page-" + Math.random().toString(16).slice(2);
    const parts = [];
    for (const file of input.files) {
      parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, "\r\n");
    }
    parts.push(`--${boundary}--\r\n`);
    result.textContent = "Sending…";
    const r = await api("/dicomweb/studies", {
      method: "POST",
      headers: { "Content-Type": `multipart/related; type="application/dicom"; boundary=${boundary}` },
      body: new Blob(parts),
    });
    const stored = (((r.body || {})["00081199"] || {}).Value || []).length;
    const failed = (((r.body || {})["00081198"] || {}).Value || []);
    const reasons = failed.map((f) => ((f["00091001"] || {}).Value || [""])[0]).join("; ");
    result.textContent = `HTTP ${r.status}: ${stored} stored, ${failed.length} refused${reasons ? " (" + reasons + ")" : ""}`;
    refreshWorklist();
  });
  return el("div", { class: "panel" }, el("strong", {}, "Send a study "), input, " ", button, result);
}

async function refreshWorklist() {
  const table = document.getElementById("worklist");
  if (!table) return;
  const status = document.getElementById("status-filter").value;
  const q = document.getElementById("search").value;
  const r = await api(`/api/v1/worklist?status=${encodeURIComponent(status)}&q=${encodeURIComponent(q)}`);
  const rows = (r.body.studies || []).map((s) =>
    el("tr", { class: "clickable", "data-study": s.study_instance_uid, onclick: () => { location.hash = `#/study/${s.study_instance_uid}`; } },
      el("td", {}, time(s.received_unix_ms)),
      el("td", {}, s.source),
      el("td", {}, s.accession_number || ""),
      el("td", {}, [s.input_class, s.content_class].filter(Boolean).join(" / ")),
      el("td", { class: `status status-${s.status}` }, s.status + (s.reason ? ` (${s.reason})` : "") + (s.flags || []).map((f) => ` [${f}]`).join("")),
      el("td", {}, (s.top_findings || []).join(", ") || s.summary || ""),
      el("td", {}, s.delivery)));
  table.tBodies[0].replaceChildren(...rows);
  document.getElementById("worklist-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function showWorklist() {
  const filter = el("select", { id: "status-filter", onchange: refreshWorklist }, STATUSES.map((s) => el("option", { value: s }, s || "any status")));
  const search = el("input", { id: "search", placeholder: "accession, patient ID or UID", oninput: refreshWorklist });
  const table = el("table", { id: "worklist" },
    el("thead", {}, el("tr", {}, ["Received", "Source", "Accession", "Input / content", "Status", "Top findings", "Delivery"].map((h) => el("th", {}, h)))),
    el("tbody"));
  view(el("h2", {}, "Worklist"), uploadForm(), el("div", {}, filter, " ", search, " ", el("small", { id: "worklist-updated" })), table);
  refreshWorklist();
  state.timer = setInterval(refreshWorklist, 5000);
}

// ---- study ---------------------------------------------------------------------

// The outcomes that carry calls; every other one shows no number.
const WITH_CALLS = ["decision", "undecided"];

function findingsTable(result) {
  const abstained = !WITH_CALLS.includes(result.outcome);
  return el("table", { id: "findings" },
    el("thead", {}, el("tr", {}, ["Finding", "Probability", "Threshold", "Call"].map((h) => el("th", {}, h)))),
    el("tbody", {}, result.labels.map((l) => el("tr", {},
      el("td", {}, l.label),
      el("td", {}, abstained || l.probability === null ? "—" : l.probability.toFixed(3)),
      el("td", {}, abstained ? "—" : thresholdText(l.threshold)),
      el("td", {}, l.finding)))));
}

function thresholdText(t) {
  return t === null || t === undefined ? "no operating point" : Number(t).toFixed(3);
}

function historyTable(versions) {
  return el("table", { id: "history" },
    el("thead", {}, el("tr", {}, ["Version", "Outcome", "Findings", "Flags", "Model", "Replaces"].map((h) => el("th", {}, h)))),
    el("tbody", {}, versions.slice().reverse().map((v) => el("tr", {},
      el("td", {}, String(v.version)),
      el("td", { class: `status-${v.outcome}` }, v.outcome + (v.reason ? ` (${v.reason})` : "")),
      el("td", {}, v.summary),
      el("td", {}, (v.flags || []).join(", ")),
      el("td", {}, v.model ? `${v.model.model_id} v${v.model.version}` : "—"),
      el("td", {}, v.supersedes ? `version ${v.supersedes.version}` : "—")))));
}

function rerunButton(uid) {
  const out = el("span", { id: "rerun-output" });
  return el("p", {}, el("button", { id: "rerun", type: "button", onclick: async () => {
    const r = await api(`/api/v1/studies/${encodeURIComponent(uid)}/rerun`, { method: "POST" });
    out.textContent = r.body.ok ? " queued: a new version follows" : ` ${errorText(r.body)}`;
  } }, "Run this study again"), out);
}

function oodBlock(line) {
  const ood = ((line || {}).decision || {}).ood;
  if (!ood) return el("p", { id: "ood" }, "No out-of-distribution score (the study stopped before the model).");
  return el("p", { id: "ood" }, `Out-of-distribution score ${Number(ood.combined).toFixed(3)} against cut-off ${ood.max_combined === null ? "—" : Number(ood.max_combined).toFixed(3)} (terms: ${(ood.kept || []).join(", ")}).`);
}

function engineBlock(line) {
  const engine = (line || {}).engine;
  if (!engine) return el("p", { id: "engine" }, "No engine ran.");
  return el("div", { id: "engine" }, el("p", {}, `Engine ${engine.name} (${engine.precision}). Why:`), el("ul", {}, (engine.reasons || []).map((r) => el("li", {}, r))));
}

function deliveryTable(delivery) {
  return el("table", { id: "delivery" },
    el("thead", {}, el("tr", {}, ["Destination", "Object", "Version", "State", "Attempts", "Last error", ""].map((h) => el("th", {}, h)))),
    el("tbody", {}, delivery.map((d) => el("tr", {},
      el("td", {}, d.destination),
      el("td", {}, d.sop_class_uid === "1.2.840.10008.5.1.4.1.1.7" ? "Secondary Capture" : "SR"),
      el("td", {}, d.version),
      el("td", {}, d.state),
      el("td", {}, d.attempts),
      el("td", {}, d.last_error || ""),
      el("td", {}, el("button", { class: "retry", "data-entry": d.id, type: "button", onclick: async (e) => {
        const r = await api(`/api/v1/deliveries/${d.id}/retry`, { method: "POST" });
        e.target.textContent = r.body.ok ? "queued again" : errorText(r.body);
      } }, "Retry"))))));
}

async function showStudy(uid) {
  const r = await api(`/api/v1/studies/${encodeURIComponent(uid)}/detail`);
  if (r.status !== 200) { view(el("p", { class: "error" }, errorText(r.body))); return; }
  const d = r.body;
  const result = d.result;
  const parts = [el("h2", {}, `Study ${uid}`)];
  if (!result) {
    parts.push(el("p", { id: "pending" }, "Not processed yet: this page refreshes."));
    view(...parts);
    state.timer = setInterval(() => { stopTimer(); showStudy(uid); }, 3000);
    return;
  }
  const deciding = d.instances.find((i) => i.result && result.decided_by.includes(i.instance)) || d.instances.find((i) => i.result);
  const line = deciding ? deciding.result.detail : null;
  parts.push(el("p", { id: "outcome", class: `status-${result.outcome}` }, `Outcome: ${result.outcome} (result version ${result.version})`));
  parts.push(el("p", { id: "summary" }, d.summary || ""));
  for (const f of result.flags || []) parts.push(el("p", { class: "flag status-abstention" }, `Flag: ${f}`));
  if (result.reason) {
    parts.push(el("div", { id: "abstention", class: "abstention" }, el("strong", {}, result.reason.code), el("p", {}, result.reason.message)));
  }
  parts.push(el("div", { class: "columns" },
    el("div", {}, el("img", { id: "picture", class: "picture", alt: "result picture", src: `/api/v1/studies/${encodeURIComponent(uid)}/picture?v=${result.version}` })),
    el("div", {}, el("h3", {}, "Findings"), findingsTable(result), el("h3", {}, "Gates"), oodBlock(line),
      el("p", {}, `Input class: ${(line || {}).input_class || "—"}; content: ${((line || {}).content || {}).class || "—"}`),
      el("h3", {}, "Engine"), engineBlock(line),
      el("h3", {}, "Timings (ms)"), el("pre", { id: "timings" }, JSON.stringify((line || {}).timings_ms || {}, null, 1)))));
  parts.push(el("h3", {}, "Result versions"), historyTable(d.versions || []), rerunButton(uid));
  parts.push(el("h3", {}, "Delivery"), deliveryTable(d.delivery));
  parts.push(el("h3", {}, "Instances"), el("ul", {}, d.instances.map((i) => el("li", {}, `${i.sop_instance_uid}: ${i.result ? i.result.outcome : "waiting"} (from ${i.source})`))));
  view(...parts);
}

// ---- system --------------------------------------------------------------------

function dl(pairs) {
  return el("dl", {}, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v))]));
}

async function showSystem() {
  const r = await api("/api/v1/system");
  const s = r.body;
  const serving = s.serving || {};
  const bundle = serving.bundle || {};
  const verifyOut = el("pre", { id: "audit-verify-output" });
  const verify = el("button", { id: "verify-audit", type: "button", onclick: async () => {
    verifyOut.textContent = "Verifying…";
    const v = await api("/api/v1/audit/verify", { method: "POST" });
    verifyOut.textContent = JSON.stringify(v.body, null, 1);
  } }, "Verify now");
  view(el("h2", {}, "System"),
    el("div", { class: "panel", id: "system" }, dl([
      ["Board", `${(s.board || {}).id} (${(s.board || {}).kind})`],
      ["Serving", serving.ready ? `${bundle.model_id} v${bundle.version}` : `no verified model: ${serving.message}`],
      ["Bundle digest", bundle.digest], ["Signing key", bundle.key_id],
      ["Engine", serving.engine ? `${serving.engine} (${serving.precision})` : null],
      ["Self-test", (serving.reasons || []).join(" | ")],
      ["Active slot", s.active], ["Previous slot", s.previous],
      ["Audit head", (s.audit || {}).head], ["Audit records", (s.audit || {}).records],
      ["Spool", s.spool], ["Associations open", s.associations_open],
      ["Outbox", s.outbox],
      ["Certificate SHA-256", (s.certificate || {}).fingerprint_sha256], ["Certificate expires", (s.certificate || {}).not_after],
    ])),
    el("div", { class: "panel" }, el("strong", {}, "Audit log "), verify, verifyOut));
}

// ---- bundles --------------------------------------------------------------------

async function pollJob(id, stage, output) {
  for (;;) {
    const r = await api(`/api/v1/jobs/${id}`);
    stage.textContent = `Stage: ${r.body.stage}`;
    if (r.body.done) { output.textContent = JSON.stringify(r.body.result, null, 1); return; }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

function showBundles() {
  const stage = el("p", { id: "bundle-progress" });
  const output = el("pre", { id: "bundle-output" });
  const file = el("input", { id: "bundle-file", type: "file", accept: ".cxrb" });
  const install = el("button", { id: "bundle-install", type: "button", onclick: async () => {
    if (!file.files.length) { stage.textContent = "Choose a bundle file first."; return; }
    stage.textContent = "Stage: uploading";
    output.textContent = "";
    const r = await api("/api/v1/bundles", { method: "POST", headers: { "Content-Type": "application/octet-stream" }, body: file.files[0] });
    if (r.status !== 202) { stage.textContent = "Refused"; output.textContent = errorText(r.body); return; }
    pollJob(r.body.job, stage, output);
  } }, "Verify and install");
  const rollback = el("button", { id: "bundle-rollback", type: "button", onclick: async () => {
    stage.textContent = "Stage: rolling back";
    const r = await api("/api/v1/bundles/rollback", { method: "POST" });
    stage.textContent = r.body.ok ? "Rolled back" : "Refused";
    output.textContent = JSON.stringify(r.body, null, 1);
  } }, "Roll back to the previous bundle");
  view(el("h2", {}, "Model bundles"),
    el("p", {}, "Only signed bundles that this board trusts are installed: each is verified and self-tested on this device's engine first, exactly as the command line does."),
    el("div", { class: "panel" }, file, " ", install, " ", rollback, stage, output));
}

// ---- access (admins) -----------------------------------------------------------------

function roleSelect(id) {
  return el("select", { id }, ["viewer", "operator", "admin"].map((r) => el("option", { value: r }, r)));
}

function passwordSetter(name, say) {
  const input = el("input", { type: "password", class: "set-password", autocomplete: "new-password", placeholder: "12+ characters" });
  const set = el("button", { type: "button", onclick: async () => {
    const r = await api(`/api/v1/access/users/${encodeURIComponent(name)}/password`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ password: input.value }) });
    input.value = "";
    say(r.status === 200 ? `Password of ${name} set.` : errorText(r.body), false);
  } }, "Set");
  return [input, " ", set];
}

function usersPanel(users, say) {
  const rows = users.map((u) => el("tr", {},
    el("td", {}, u.name), el("td", {}, u.role), el("td", {}, passwordSetter(u.name, say)),
    el("td", {}, u.name === state.user ? "(you)" : el("button", { type: "button", class: "remove-user", "data-name": u.name, onclick: async () => {
      if (!confirm(`Remove ${u.name}?`)) return;
      const r = await api(`/api/v1/access/users/${encodeURIComponent(u.name)}`, { method: "DELETE" });
      say(r.status === 200 ? `Removed ${u.name}.` : errorText(r.body), r.status === 200);
    } }, "Remove"))));
  const name = el("input", { id: "new-user-name", autocomplete: "off", placeholder: "name" });
  const password = el("input", { id: "new-user-password", type: "password", autocomplete: "new-password", placeholder: "password (12+ characters)" });
  const role = roleSelect("new-user-role");
  const add = el("button", { id: "add-user", type: "button", onclick: async () => {
    const r = await api("/api/v1/access/users", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: name.value, role: role.value, password: password.value }) });
    say(r.status === 200 ? `Added ${name.value} (${role.value}).` : errorText(r.body), r.status === 200);
  } }, "Add user");
  return el("div", { class: "panel" }, el("h3", {}, "Users"),
    el("table", { id: "users" }, el("tr", {}, ["Name", "Role", "New password", ""].map((h) => el("th", {}, h))), rows),
    el("p", {}, name, " ", password, " ", role, " ", add));
}

function tokensPanel(tokens, say, newToken) {
  const rows = tokens.map((t) => el("tr", {},
    el("td", {}, t.id), el("td", {}, t.role), el("td", {}, t.label), el("td", {}, time(t.created_unix_ms)),
    el("td", {}, el("button", { type: "button", class: "revoke-token", "data-id": t.id, onclick: async () => {
      if (!confirm(`Revoke token ${t.id}?`)) return;
      const r = await api(`/api/v1/access/tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
      say(r.status === 200 ? `Revoked ${t.id}.` : errorText(r.body), r.status === 200);
    } }, "Revoke"))));
  const label = el("input", { id: "new-token-label", autocomplete: "off", placeholder: "what it is for" });
  const role = roleSelect("new-token-role");
  // A new token is shown once: only its digest is kept.
  const shown = el("pre", { id: "new-token" }, newToken || "");
  const create = el("button", { id: "create-token", type: "button", onclick: async () => {
    const r = await api("/api/v1/access/tokens", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ role: role.value, label: label.value }) });
    if (r.status !== 200) { say(errorText(r.body), false); return; }
    showAccess(`Token ${r.body.subject} created. Copy it now: it is not shown again.`, r.body.token);
  } }, "Create token");
  return el("div", { class: "panel" }, el("h3", {}, "API tokens"),
    el("table", { id: "tokens" }, el("tr", {}, ["Id", "Role", "Label", "Created", ""].map((h) => el("th", {}, h))), rows),
    el("p", {}, label, " ", role, " ", create), shown);
}

async function showAccess(notice, newToken) {
  const r = await api("/api/v1/access");
  if (r.status !== 200) { view(el("h2", {}, "Access"), el("p", { class: "error" }, errorText(r.body))); return; }
  const message = el("p", { id: "access-message" }, notice || "");
  const say = (text, reload) => { if (reload) showAccess(text); else message.textContent = text; };
  view(el("h2", {}, "Access"),
    el("p", {}, "Every change is audited under your name. Passwords are hashed on the appliance; a token is shown once."),
    message, usersPanel(r.body.users || [], say), tokensPanel(r.body.tokens || [], say, newToken));
}

// ---- routing ----------------------------------------------------------------------

async function route() {
  stopTimer();
  const hash = location.hash || "#/worklist";
  if (hash === "#/login") { showLogin(); return; }
  if (!(await ensureSession())) { showLogin(); return; }
  document.getElementById("nav").hidden = false;
  document.getElementById("whoami").textContent = `${state.user} (${state.role})`;
  document.getElementById("nav-access").hidden = state.role !== "admin";
  if (hash.startsWith("#/study/")) return showStudy(decodeURIComponent(hash.slice(8)));
  if (hash === "#/system") return showSystem();
  if (hash === "#/bundles") return showBundles();
  if (hash === "#/access") return showAccess();
  return showWorklist();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout").addEventListener("click", async () => {
    await api("/api/v1/logout", { method: "POST" });
    Object.assign(state, { csrf: null, user: null, role: null });
    location.hash = "#/login";
  });
  route();
});
