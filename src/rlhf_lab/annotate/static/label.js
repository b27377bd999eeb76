// The label page: keyboard-first pairwise comparison over the JSON API (/api/labels, /api/skip).
// Model text is untrusted: it only ever goes into the page through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

function newClientId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// editing: the label id while the annotator is changing their last label (undo), else null
const state = { assignmentId: null, clientId: null, shownAt: 0, busy: false, editing: null };

function form() { return $("label-form"); }
function selected(name) { const el = form().querySelector(`input[name="${name}"]:checked`); return el ? el.value : null; }
function message(text) { $("message").textContent = text || ""; }

function showPair(pair) {
  $("workspace").hidden = false;
  $("done").hidden = true;
  $("prompt").textContent = pair.prompt;
  $("left").textContent = pair.left;
  $("right").textContent = pair.right;
  $("outcome").textContent = pair.outcome || "";
  $("outcome-box").hidden = !pair.outcome;
}

function show(assignment) {
  state.editing = null;
  $("editing").hidden = true;
  if (!assignment) {
    $("workspace").hidden = true;
    $("done").hidden = false;
    state.assignmentId = null;
    return;
  }
  showPair(assignment);
  reset(assignment.assignment_id);
}

// Undo: the last label's pair comes back as it was shown, its answer filled in; Enter stores the change.
function showEdit(data) {
  const assignmentId = state.assignmentId;
  showPair(data.pair);
  reset(assignmentId);
  state.editing = data.label.label_id;
  choose(data.label.choice);
  if (data.label.strength) strength(data.label.strength);
  $("rationale").value = data.label.rationale || "";
  $("editing").hidden = false;
}

function reset(assignmentId) {
  // A new pair starts with the focus on the page, not in the text box it was submitted from
  // (Ctrl+Enter): otherwise the next pair's shortcut keys would be typed into the rationale.
  if (document.activeElement && form().contains(document.activeElement)) document.activeElement.blur();
  form().reset();
  $("strength-set").disabled = false;
  $("left-card").classList.remove("chosen");
  $("right-card").classList.remove("chosen");
  message("");
  state.assignmentId = assignmentId;
  state.clientId = newClientId();  // a retry of this submission reuses it, so it is stored once
  state.shownAt = performance.now();
  window.scrollTo(0, 0);
}

function progress(p, hasNext) {
  if (!p) return;
  $("progress-done").textContent = p.done;
  const left = $("progress-left");
  if (p.remaining !== undefined) {
    left.textContent = p.remaining;
  } else if (!hasNext) {
    left.textContent = "0";
  } else {  // after a label or skip the server leaves the count to us: one fewer
    const n = parseInt(left.textContent, 10);
    left.textContent = Math.max(1, n - 1);
  }
}

function choose(value) {
  form().querySelector(`input[name="choice"][value="${value}"]`).checked = true;
  $("left-card").classList.toggle("chosen", value === "left");
  $("right-card").classList.toggle("chosen", value === "right");
  $("strength-set").disabled = value === "tie" || value === "both_bad";
  message("");
}

function strength(value) {
  if ($("strength-set").disabled) return;
  form().querySelector(`input[name="strength"][value="${value}"]`).checked = true;
  message("");
}

async function post(url, body) {
  // Retries network failures and server errors with the same body (same client_id): at most once stored.
  let lastError = null;
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const r = await fetch(url, {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()}, body: JSON.stringify(body)});
      if (r.status < 500) return r;
      lastError = new Error(`server error ${r.status}`);
    } catch (e) {
      lastError = e;
    }
    await new Promise((res) => setTimeout(res, 300 * 2 ** attempt));
  }
  throw lastError;
}

async function send(url, body) {
  if (state.busy || (state.assignmentId === null && state.editing === null)) return;
  state.busy = true;
  try {
    const r = await post(url, body);
    const data = await r.json();
    if (!r.ok) { message(data.detail || `error ${r.status}`); return; }
    show(data.assignment);
    progress(data.progress, Boolean(data.assignment));
  } catch (e) {
    message("Could not reach the server; your label is kept here — press Enter to try again.");
  } finally {
    state.busy = false;
  }
}

function submit() {
  const choice = selected("choice");
  const str = selected("strength");
  if (!choice) { message("Choose left (1), right (2), tie (3) or both bad (4) first."); return; }
  const even = choice === "tie" || choice === "both_bad";
  if (!even && !str) { message("How much better? Press s (slightly) or m (much)."); return; }
  if (state.editing !== null) {
    send(`/api/labels/${state.editing}/revise`, {choice, strength: even ? null : str,
      rationale: $("rationale").value.trim() || null});
    return;
  }
  send("/api/labels", {
    assignment_id: Number(state.assignmentId), client_id: state.clientId, choice,
    strength: even ? null : str, rationale: $("rationale").value.trim() || null,
    time_spent_ms: Math.round(performance.now() - state.shownAt),
  });
}

function skip() {
  if (state.editing === null) send("/api/skip", {assignment_id: Number(state.assignmentId)});
}

async function get(url) {
  const r = await fetch(url, {credentials: "same-origin"});
  return [r, await r.json()];
}

async function undo() {
  if (state.busy) return;
  state.busy = true;
  try {
    if (state.editing !== null) {  // u again: back to the current pair, nothing changed
      const [, data] = await get("/api/next");
      show(data.assignment);
      progress(data.progress, Boolean(data.assignment));
    } else {
      const [r, data] = await get("/api/labels/last");
      if (!r.ok) { message(data.detail || `error ${r.status}`); return; }
      showEdit(data);
    }
  } catch (e) {
    message("Could not reach the server; try again.");
  } finally {
    state.busy = false;
  }
}

function toggleGuidelines() {
  const d = $("guidelines-dialog");
  if (d.open) d.close(); else d.showModal();
}

const KEYS = {
  "1": () => choose("left"), "ArrowLeft": () => choose("left"),
  "2": () => choose("right"), "ArrowRight": () => choose("right"),
  "3": () => choose("tie"), "t": () => choose("tie"),
  "4": () => choose("both_bad"), "b": () => choose("both_bad"), "u": undo,
  "s": () => strength("slightly"), "m": () => strength("much"),
  "r": () => $("rationale").focus(), "k": skip, "Enter": submit, "g": toggleGuidelines,
};

function onKey(event) {
  if (event.ctrlKey || event.altKey || event.metaKey) {
    if (event.key === "Enter" && event.target.id === "rationale") { event.preventDefault(); submit(); }
    return;
  }
  if ($("guidelines-dialog").open) {
    if (event.key === "g") { event.preventDefault(); toggleGuidelines(); }
    return;  // Esc closes the dialog natively
  }
  const tag = event.target.tagName;
  if (tag === "TEXTAREA" || tag === "INPUT" && event.target.type === "text") {
    if (event.key === "Escape") event.target.blur();
    return;
  }
  const action = KEYS[event.key];
  if (!action || ($("workspace").hidden && event.key !== "g" && event.key !== "u")) return;
  event.preventDefault();
  action();
}

document.addEventListener("DOMContentLoaded", () => {
  const id = $("workspace").dataset.assignmentId;
  if (id) reset(Number(id));
  form().addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  form().addEventListener("change", (e) => { if (e.target.name === "choice") choose(e.target.value); });
  $("skip").addEventListener("click", skip);
  $("undo").addEventListener("click", undo);
  $("open-guidelines").addEventListener("click", toggleGuidelines);
  $("close-guidelines").addEventListener("click", toggleGuidelines);
  document.addEventListener("keydown", onKey);
});
