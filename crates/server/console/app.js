// The Strongroom console. Plain ES modules, no framework, nothing from another origin.
//
// Rules this file keeps: every value from the server goes into the page as text (never as
// markup); every request that changes something carries the session's CSRF token; what an
// approver approves is what intent.js decoded from the intent bytes, and the passkey signs only
// a challenge this page recomputed from those bytes.

import {
  approvalMessage,
  base64url,
  bytesToHex,
  formatUnits,
  fromBase64url,
  readEntry,
  verifyWithdrawal,
} from "./intent.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const phish = document.getElementById("anti-phishing");
let me = null;

// ---------- DOM ----------

/** An element: `attrs` are attributes (`text` sets its text); children are nodes or text. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Which address each page's title belongs to (a prefix of `location.hash`). */
const PAGE_ROUTES = [
  ["Sign in", "#/signin"],
  ["Withdrawals waiting for approval", "#/approvals"],
  ["Withdrawal", "#/withdrawals/"],
  ["Review queue", "#/reviews"],
  ["Review of", "#/reviews/"],
  ["Dashboard", "#/dashboard"],
  ["Customers", "#/customers"],
  ["Audit log", "#/audit"],
  ["Governance", "#/governance"],
  ["My withdrawals", "#/mine"],
  ["Security", "#/security"],
];

/**
 * Draw a page. A page that was still loading when the user went elsewhere is not drawn over
 * the page they went to (its title's address is no longer the one in the address bar).
 */
function show(title, ...children) {
  const route = PAGE_ROUTES.find(([t]) => title === t || title.startsWith(`${t} `));
  if (route && !(location.hash || "#/").startsWith(route[1])) return;
  document.title = `${title} · Strongroom console`;
  main.replaceChildren(h("h1", { text: title }), ...children);
  main.focus();
}

function notice(kind, text) {
  return h("div", { class: `notice ${kind}`, role: kind === "bad" ? "alert" : "status", text });
}

function row(label, ...value) {
  return [h("dt", { text: label }), h("dd", {}, ...value)];
}

function when(ms) {
  return new Date(ms).toLocaleString();
}

// ---------- the API ----------

class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function cookie(name) {
  for (const part of document.cookie.split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return "";
}

async function api(method, path, body, { idempotent = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("sr_csrf");
  if (idempotent) headers["Idempotency-Key"] = crypto.randomUUID();
  const resp = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  const json = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const e = json && json.error ? json.error : { code: "http_" + resp.status, message: resp.statusText };
    throw new ApiFailure(resp.status, e.code, e.message);
  }
  return json;
}

function failure(e) {
  return notice("bad", e instanceof ApiFailure ? `${e.message} (${e.code})` : String(e.message || e));
}

/** A form's `on`: the page stays put, the last message goes, and a failure is shown in `out`. */
function submitting(out, fn) {
  return {
    submit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      try {
        await fn(ev);
      } catch (e) {
        out.replaceChildren(failure(e));
      }
    },
  };
}

// ---------- WebAuthn: options from JSON (base64url) to what the browser takes, and back ----------

function creationOptions(o) {
  const pk = structuredClone(o.publicKey);
  pk.challenge = fromBase64url(pk.challenge);
  pk.user.id = fromBase64url(pk.user.id);
  pk.excludeCredentials = (pk.excludeCredentials || []).map((c) => ({ ...c, id: fromBase64url(c.id) }));
  return { publicKey: pk };
}

function requestOptions(o, challenge) {
  const pk = structuredClone(o.publicKey);
  pk.challenge = challenge || fromBase64url(pk.challenge);
  pk.allowCredentials = (pk.allowCredentials || []).map((c) => ({ ...c, id: fromBase64url(c.id) }));
  return { publicKey: pk };
}

function b64(buf) {
  return base64url(new Uint8Array(buf));
}

function credentialJson(c) {
  const r = c.response;
  const response = { clientDataJSON: b64(r.clientDataJSON) };
  if (r.attestationObject) response.attestationObject = b64(r.attestationObject);
  if (r.authenticatorData) response.authenticatorData = b64(r.authenticatorData);
  if (r.signature) response.signature = b64(r.signature);
  if (r.userHandle) response.userHandle = b64(r.userHandle);
  return { id: c.id, rawId: b64(c.rawId), type: c.type, response, extensions: {} };
}

// ---------- signing in ----------

async function loadMe() {
  try {
    me = await api("GET", "/v1/me");
  } catch (e) {
    if (!(e instanceof ApiFailure) || e.status !== 401) throw e;
    me = null;
  }
  renderChrome();
}

function renderChrome() {
  nav.replaceChildren();
  who.replaceChildren();
  phish.replaceChildren();
  phish.hidden = true;
  if (!me) return;
  if (me.anti_phishing_code) {
    phish.append("Your anti-phishing code: ", h("strong", { text: me.anti_phishing_code }), ". If a page or an e-mail from us does not show it, it is not from us.");
    phish.hidden = false;
  }
  const here = location.hash || "#/";
  const link = (href, text) =>
    h("a", { href, text, "aria-current": here.startsWith(href) ? "page" : null });
  if (me.role === "approver") nav.append(link("#/approvals", "Approvals"));
  if (me.role === "analyst" || me.role === "operator") nav.append(link("#/reviews", "Review queue"));
  if (!me.role) nav.append(link("#/mine", "My withdrawals"));
  if (me.role) {
    nav.append(link("#/dashboard", "Dashboard"), link("#/customers", "Customers"), link("#/governance", "Governance"), link("#/audit", "Audit log"));
  }
  nav.append(link("#/security", "Security"));
  const label = me.role ? `${me.email} · ${me.role}${me.member ? ` (${me.member})` : ""}` : me.email;
  who.append(
    h("span", { text: label }),
    h("button", { class: "secondary", type: "button", on: { click: signOut } }, "Sign out"),
  );
}

async function signOut() {
  try {
    await api("POST", "/v1/auth/logout");
  } finally {
    me = null;
    renderChrome();
    location.hash = "#/signin";
  }
}

function signIn() {
  const email = h("input", { id: "email", name: "email", type: "email", autocomplete: "username webauthn", required: true });
  const password = h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password" });
  const code = h("input", { id: "code", name: "code", inputmode: "numeric", autocomplete: "one-time-code" });
  const out = h("div", { "aria-live": "polite" });
  const done = async () => {
    await loadMe();
    location.hash = home();
    route();
  };
  const form = h(
    "form",
    {
      on: submitting(out, async () => {
        const body = { email: email.value, password: password.value, device_name: "console" };
        if (code.value.trim()) body.totp_code = code.value.trim();
        await api("POST", "/v1/auth/login", body);
        await done();
      }),
    },
    h("label", { for: "email" }, "E-mail", email),
    h("label", { for: "password" }, "Password", password),
    h("label", { for: "code" }, "Two-factor code (if you use one)", code),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Sign in"),
      h("button", {
        type: "button",
        class: "secondary",
        on: {
          click: async () => {
            out.replaceChildren();
            try {
              const start = await api("POST", "/v1/auth/passkey/options", { email: email.value });
              const cred = await navigator.credentials.get(requestOptions(start.options));
              await api("POST", "/v1/auth/passkey/login", {
                ceremony_id: start.ceremony_id,
                credential: credentialJson(cred),
                device_name: "console",
              });
              await done();
            } catch (e) {
              out.replaceChildren(failure(e));
            }
          },
        },
      }, "Sign in with a passkey"),
    ),
  );
  show("Sign in", form, out);
}

function home() {
  if (!me) return "#/signin";
  if (me.role === "approver") return "#/approvals";
  if (me.role === "analyst") return "#/reviews";
  if (!me.role) return "#/mine";
  return "#/dashboard";
}

// ---------- approvers ----------

async function approvals() {
  show("Withdrawals waiting for approval", h("p", { text: "Loading…" }));
  const waiting = [];
  const reserved = await apiAll("/v1/withdrawals?state=reserved");
  for (const w of reserved) {
    const full = await api("GET", `/v1/withdrawals/${encodeURIComponent(w.id)}`);
    const mine = (full.approvals || []).some((a) => a.approver === me.member);
    if (full.policy && full.policy.outcome === "wait" && !mine) waiting.push(full);
  }
  if (waiting.length === 0) {
    show("Withdrawals waiting for approval", h("p", { text: "Nothing waits for your approval." }));
    return;
  }
  const rows = [];
  for (const w of waiting) {
    let amount;
    let destination;
    try {
      const { intent, mismatches } = await verifyWithdrawal(w);
      amount = `${formatUnits(intent.amount, intent.asset.decimals)} ${intent.asset.symbol}`;
      destination = h("span", { class: "mono", text: intent.destination });
      if (mismatches.length) amount += " (the server's fields disagree with the intent)";
    } catch (e) {
      amount = `cannot decode: ${e.message}`;
      destination = "";
    }
    rows.push(
      h("tr", {},
        h("td", {}, h("a", { href: `#/withdrawals/${w.id}`, text: w.id.slice(0, 8) })),
        h("td", { text: amount }),
        h("td", {}, destination),
        h("td", { text: `${w.policy.approvals} of ${w.policy.approvals_needed}` }),
        h("td", { text: when(w.created_at_ms) }),
      ),
    );
  }
  show(
    "Withdrawals waiting for approval",
    h("table", {},
      h("thead", {}, h("tr", {}, ...["Withdrawal", "Amount", "Destination", "Approvals", "Requested"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows),
    ),
  );
}

/** Whether the governance log's asset registry (genesis and asset entries) names this exact
 * asset: chain, symbol, decimals and contract. */
function registered(g, intent) {
  if (!g.installed || !g.genesis) return "no governance: no signed registry";
  const key = (a) => [a.chain, a.symbol, a.decimals, (a.contract || "").toLowerCase()].join("|");
  const want = key({ chain: intent.chain, ...intent.asset });
  const live = new Set((g.genesis.assets || []).map(key));
  for (const e of g.entries) {
    if (e.change.change === "asset_add") live.add(key(e.change.asset));
    if (e.change.change === "asset_remove") {
      for (const k of [...live]) if (k.startsWith(`${e.change.chain}|${e.change.symbol}|`)) live.delete(k);
    }
  }
  return live.has(want) ? "in the signed asset registry" : "NOT in the signed asset registry";
}

async function withdrawal(id) {
  const [w, g] = await Promise.all([api("GET", `/v1/withdrawals/${encodeURIComponent(id)}`), api("GET", "/v1/governance")]);
  let checked;
  try {
    checked = await verifyWithdrawal(w);
  } catch (e) {
    show("Withdrawal", notice("bad", `This withdrawal's intent cannot be decoded here: ${e.message}. Do not approve it.`));
    return;
  }
  const { intent, hash, mismatches } = checked;
  const expired = intent.expires_at_ms <= Date.now();
  const parts = [];
  if (mismatches.length) {
    parts.push(
      h("div", { class: "notice bad", role: "alert", id: "verification" },
        h("strong", { text: "The server's description of this withdrawal does not match its intent. Do not approve it." }),
        h("ul", {}, mismatches.map((m) => h("li", { text: `${m.field}: the intent says ${m.ours}, the server says ${m.theirs}` }))),
      ),
    );
  } else {
    parts.push(notice("ok", `Decoded and hashed in this browser: intent hash ${hash} matches.`));
    parts.at(-1).id = "verification";
  }
  const fee = intent.chain.startsWith("eip155:") ? `${formatUnits(intent.fee_cap, 18)} ETH` : `${intent.fee_cap} sat`;
  parts.push(
    h("h2", { text: "What is signed" }),
    h("dl", { id: "intent" },
      row("Amount", `${formatUnits(intent.amount, intent.asset.decimals)} ${intent.asset.symbol}`),
      row("Destination", h("span", { class: "mono", text: intent.destination }), h("br"), destinationNote(w)),
      row("Chain", intent.chain),
      row("Asset", `${intent.asset.symbol}, ${intent.asset.decimals} decimals${intent.asset.contract ? ", contract " : ", native"}`,
        intent.asset.contract ? h("span", { class: "mono", text: intent.asset.contract }) : "",
        h("br"), h("span", { class: "hint", id: "registry", text: registered(g, intent) })),
      row("From wallet", intent.source_wallet),
      row("Network fee at most", fee),
      row("Expires", `${when(intent.expires_at_ms)}${expired ? " (expired)" : ""}`),
      row("Request", h("span", { class: "mono", text: intent.request_id })),
      row("Intent hash", h("span", { class: "mono", text: hash })),
    ),
    h("h2", { text: "State" }),
    h("dl", {}, row("State", w.state), row("Customer", h("span", { class: "mono", text: w.customer_id }))),
  );
  if (w.policy) {
    parts.push(
      h("h2", { text: "Policy" }),
      h("dl", { id: "policy" },
        row("Decision", w.policy.outcome),
        row("Rule", `${w.policy.rule} (policy version ${w.policy.version})`),
        row("Approvals", `${w.policy.approvals} of ${w.policy.approvals_needed}`),
        row("Why", w.policy.explanation),
      ),
    );
  }
  parts.push(h("h2", { text: "Approvals so far" }));
  const got = w.approvals || [];
  parts.push(
    got.length
      ? h("ul", { id: "approvals" }, got.map((a) => h("li", { text: `${a.approver} (policy version ${a.policy_version})` })))
      : h("p", { id: "approvals", text: "None yet." }),
  );
  if (w.risk) {
    const reasons = (w.risk.assessment && w.risk.assessment.reasons) || [];
    parts.push(
      h("h2", { text: "Risk" }),
      h("dl", {}, row("Decision", `${w.risk.decision}, score ${w.risk.score}`), row("Review", w.risk.state)),
      reasons.length ? h("ul", {}, reasons.map((r) => h("li", { text: `${r.source}: ${r.detail} (${r.points})` }))) : null,
    );
  }
  if (w.denial) {
    parts.unshift(notice("bad", `Denied by ${w.denial.by} at ${when(w.denial.at_ms)}: ${w.denial.reason}`));
  }
  const out = h("div", { "aria-live": "polite" });
  const mine = got.some((a) => a.approver === me.member);
  if (me.role === "approver" && w.state === "reserved" && !mine) {
    const blocked = mismatches.length > 0 || expired || registered(g, intent).startsWith("NOT");
    const approve = h("button", { type: "button", disabled: blocked }, "Approve with my passkey");
    approve.addEventListener("click", async () => {
      approve.disabled = true;
      out.replaceChildren(notice("ok", "Waiting for your passkey…"));
      try {
        await approveWith(w, hash);
        out.replaceChildren(notice("ok", "Approved: your approval is recorded; the signer nodes check it themselves."));
        await withdrawal(id);
      } catch (e) {
        out.replaceChildren(failure(e));
        approve.disabled = false;
      }
    });
    parts.push(h("div", { class: "actions" }, approve));
  }
  if (me.role === "approver" && w.state === "reserved") {
    parts.push(denyForm(w, out));
  }
  parts.push(out);
  show(`Withdrawal ${w.id.slice(0, 8)}`, ...parts);
}

/** What is known about the destination: its whitelist label, and whether it is new. */
function destinationNote(w) {
  const notes = [];
  const wl = w.destination_whitelist;
  if (wl) {
    const whose = wl.scope === "internal" ? "our own wallet" : "on the customer's whitelist";
    notes.push(`${wl.label} (${whose}, usable from ${when(wl.usable_from_ms)})`);
  } else {
    notes.push("not on any whitelist");
  }
  const features = (w.risk && w.risk.assessment && w.risk.assessment.features) || [];
  const fresh = features.find((f) => f.name === "new_destination");
  if (fresh && fresh.value >= 1) notes.push("the first withdrawal to this address");
  return h("span", { class: "hint", id: "destination-note", text: notes.join("; ") });
}

/**
 * Approve with the approver's passkey. The server proposes the approval (policy version,
 * expiry) and the WebAuthn options; the page signs only if the challenge is the approval
 * message it computes itself from the intent hash it computed from the bytes.
 */
async function approveWith(w, hash) {
  const ch = await api("GET", `/v1/withdrawals/${encodeURIComponent(w.id)}/approval-challenge`);
  if (ch.intent_hash !== hash) throw new Error("the server asked to approve another intent; refused");
  if (ch.approver !== me.member) throw new Error(`the server asked to approve as ${ch.approver}; refused`);
  const now = Date.now();
  if (!(ch.expires_at_ms > now && ch.expires_at_ms <= now + 2 * 3600 * 1000)) {
    throw new Error("the approval's expiry is not within the next two hours; refused");
  }
  const message = await approvalMessage(hash, ch.policy_version, ch.expires_at_ms);
  if (ch.options.publicKey.challenge !== base64url(message)) {
    throw new Error("the server's challenge is not this approval's message; refused");
  }
  const cred = await navigator.credentials.get(requestOptions(ch.options, message));
  const r = cred.response;
  await api(
    "POST",
    `/v1/withdrawals/${encodeURIComponent(w.id)}/approvals`,
    {
      approver: ch.approver,
      intent_hash: hash,
      policy_version: ch.policy_version,
      expires_at_ms: ch.expires_at_ms,
      webauthn: {
        authenticator_data: b64(r.authenticatorData),
        client_data_json: b64(r.clientDataJSON),
        signature: b64(r.signature),
      },
    },
    { idempotent: true },
  );
}

/** Deny with a reason: the withdrawal is cancelled for everyone. */
function denyForm(w, out) {
  const reason = h("textarea", { id: "deny-reason", name: "deny-reason", rows: 2, maxlength: 500, required: true });
  return h(
    "form",
    {
      class: "deny",
      on: submitting(out, async () => {
        await api("POST", `/v1/withdrawals/${encodeURIComponent(w.id)}/deny`, { reason: reason.value }, { idempotent: true });
        await withdrawal(w.id);
      }),
    },
    h("h2", { text: "Deny" }),
    h("label", { for: "deny-reason" }, "Why (the withdrawal is cancelled for everyone)", reason),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Deny this withdrawal")),
  );
}

// ---------- analysts ----------

async function reviews() {
  const open = await apiAll("/v1/risk/reviews?state=open");
  if (open.length === 0) {
    show("Review queue", h("p", { text: "No withdrawal waits for a review." }));
    return;
  }
  show(
    "Review queue",
    h("table", {},
      h("thead", {}, h("tr", {}, ...["Withdrawal", "Score", "Why", "Assigned to", "Paused"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, open.map((r) => {
        const reasons = ((r.assessment && r.assessment.reasons) || []).map((x) => x.source).join(", ");
        return h("tr", {},
          h("td", {}, h("a", { href: `#/reviews/${r.withdrawal_id}`, text: r.withdrawal_id.slice(0, 8) })),
          h("td", { text: String(r.score) }),
          h("td", { text: reasons }),
          h("td", { text: r.assignee || "nobody" }),
          h("td", { text: when(r.created_at_ms) }),
        );
      })),
    ),
  );
}

async function review(id) {
  const r = await api("GET", `/v1/risk/reviews/${encodeURIComponent(id)}`);
  const w = await api("GET", `/v1/withdrawals/${encodeURIComponent(id)}`);
  const history = (await api("GET", `/v1/withdrawals?customer_id=${encodeURIComponent(w.customer_id)}&limit=20`)).data;
  let what = `${w.amount_decimal} ${w.asset} to ${w.destination}`;
  try {
    const { intent, mismatches } = await verifyWithdrawal(w);
    what = `${formatUnits(intent.amount, intent.asset.decimals)} ${intent.asset.symbol} to ${intent.destination}`;
    if (mismatches.length) what += " (the server's fields disagree with the intent)";
  } catch (e) {
    what += ` (the intent cannot be decoded: ${e.message})`;
  }
  const a = r.assessment || {};
  const out = h("div", { "aria-live": "polite" });
  const parts = [
    h("dl", { id: "review" },
      row("Withdrawal", what),
      row("State", `${r.state} (withdrawal ${w.state})`),
      row("Decision", `${r.decision}, score ${r.score}`),
      row("Assigned to", r.assignee || "nobody"),
      r.decided_by ? row("Decided by", r.decided_by) : null,
    ),
    h("h2", { text: "Why it was paused" }),
    h("ul", { id: "reasons" }, (a.reasons || []).map((x) => h("li", { text: `${x.source}: ${x.detail} (${x.points} points)` }))),
  ];
  if ((a.shadow || []).length) {
    parts.push(h("h2", { text: "Shadow rules (not counted)" }), h("ul", {}, a.shadow.map((x) => h("li", { text: `${x.source}: ${x.detail}` }))));
  }
  parts.push(
    h("h2", { text: "Features" }),
    h("table", { id: "features" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Feature" }), h("th", { scope: "col", text: "Value" }))),
      h("tbody", {}, (a.features || []).map((f) => h("tr", {}, h("td", { text: f.name }), h("td", { text: String(f.value) })))),
    ),
    h("h2", { text: "The customer's recent withdrawals" }),
    h("table", { id: "history" },
      h("thead", {}, h("tr", {}, ...["When", "Amount", "Destination", "State"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, history.map((x) => h("tr", {},
        h("td", { text: when(x.created_at_ms) }),
        h("td", { text: `${x.amount_decimal} ${x.asset}` }),
        h("td", {}, h("span", { class: "mono", text: x.destination })),
        h("td", { text: x.id === w.id ? `${x.state} (this one)` : x.state }),
      ))),
    ),
    h("h2", { text: "Notes" }),
    (r.notes || []).length
      ? h("ul", { id: "notes" }, r.notes.map((n) => h("li", { text: `${n.by}, ${when(n.at_ms)}: ${n.text}` })))
      : h("p", { id: "notes", text: "No notes yet." }),
  );
  if (r.state === "open") {
    const text = h("textarea", { id: "review-note", name: "review-note", rows: 3, maxlength: 2000 });
    const act = (verb, path, body) => async () => {
      out.replaceChildren();
      try {
        await api("POST", `/v1/risk/reviews/${encodeURIComponent(id)}/${path}`, body(), { idempotent: true });
        await review(id);
      } catch (e) {
        out.replaceChildren(failure(e));
      }
    };
    parts.push(
      h("label", { for: "review-note" }, "Note (kept with the review; sent with a decision)", text),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "secondary", on: { click: act("assign", "assign", () => ({ assignee: me.email })) } }, "Assign to me"),
        h("button", { type: "button", class: "secondary", on: { click: act("note", "notes", () => ({ text: text.value })) } }, "Add note"),
        h("button", { type: "button", on: { click: act("release", "release", () => ({ text: text.value || null })) } }, "Release"),
        h("button", { type: "button", class: "danger", on: { click: act("reject", "reject", () => ({ text: text.value || null })) } }, "Reject"),
      ),
    );
  }
  parts.push(out);
  show(`Review of ${id.slice(0, 8)}`, ...parts);
}

// ---------- operators and auditors ----------

function ago(seconds) {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

/** How long until `at` (a time-lock's end: ms or an ISO time), by this browser's clock. */
function remaining(at) {
  return ago(Math.max(0, Math.round((new Date(at).getTime() - Date.now()) / 1000)));
}

function table(id, head, rows) {
  return h("table", { id },
    h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
  );
}

/** `path` with `after` (a list's cursor) and `limit` added to its query. */
function pageOf(path, after, limit) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (after) q.set("after", after);
  return `${path}${path.includes("?") ? "&" : "?"}${q}`;
}

/** Every row of a list, following its cursor page by page (the work queues: nothing in
 * them may be left out). */
async function apiAll(path) {
  const rows = [];
  let after = null;
  for (;;) {
    const page = await api("GET", pageOf(path, after, 1000));
    rows.push(...page.data);
    if (!page.has_more) return rows;
    after = page.next_cursor;
  }
}

/** A table of a list's first page, and a button that adds the next page below while more
 * follow (`empty`: what to say instead of an empty table). */
async function pagedTable(id, head, path, rowOf, empty) {
  const first = await api("GET", pageOf(path, null, 100));
  if (empty && first.data.length === 0) return h("p", { id, text: empty });
  const t = table(id, head, first.data.map(rowOf));
  const body = t.querySelector("tbody");
  const more = h("button", { type: "button", id: `${id}-more`, text: "Show older" });
  let after = first.next_cursor;
  more.hidden = !first.has_more;
  more.addEventListener("click", async () => {
    more.disabled = true;
    const page = await api("GET", pageOf(path, after, 100));
    for (const r of page.data.map(rowOf)) body.append(h("tr", {}, r.map((c) => h("td", {}, c))));
    after = page.next_cursor;
    more.hidden = !page.has_more;
    more.disabled = false;
  });
  return h("div", {}, t, more);
}

async function dashboard() {
  const [t, s, refills] = await Promise.all([
    api("GET", "/v1/treasury"), api("GET", "/v1/ops/summary"), api("GET", "/v1/treasury/refills?open=true"),
  ]);
  const pct = (bps) => `${(bps / 100).toFixed(2)}%`;
  const failing = s.checks.filter((c) => !c.ok);
  show(
    "Dashboard",
    failing.length
      ? notice("bad", `Not ready: ${failing.map((c) => `${c.component} (${c.detail})`).join("; ")}`)
      : notice("ok", "Every check passes: database, chains, signer nodes."),
    h("h2", { text: "Hot and cold" }),
    t.assets.length
      ? table("treasury", ["Asset", "Hot", "Cold", "Cold share", "Floor", "", "Next"], t.assets.map((a) => [
          a.asset, a.hot_decimal, a.cold_decimal, pct(a.cold_bps), pct(a.min_cold_bps),
          a.meets_minimum ? "meets the floor" : "below the floor", a.action_amount ? `${a.action} ${a.action_amount}` : a.action,
        ]))
      : h("p", { id: "treasury", text: "No treasury runs on this deployment (no cold wallet is configured)." }),
    h("h2", { text: "Refills from cold" }),
    refills.data.length
      ? table("refills", ["Asset", "Amount", "To", "State", "Waiting for", "Approvals"], refills.data.map((r) => [
          r.asset, r.amount_decimal, r.to, r.state.replace("_", " "), r.waiting_for || "",
          r.approvals.map((a) => a.approver).join(", ") || "none",
        ]))
      : h("p", { id: "refills", text: "No refill from cold is asked for." }),
    h("h2", { text: "Withdrawals not yet final" }),
    s.withdrawals.length
      ? table("backlog", ["State", "How many", "Oldest"], s.withdrawals.map((b) => [b.state, String(b.count), ago(b.oldest_seconds)]))
      : h("p", { id: "backlog", text: "None." }),
    h("h2", { text: "Queues" }),
    h("dl", { id: "queues" },
      row("Risk reviews waiting", String(s.review_queue)),
      row("Alerts not yet delivered", `${s.outbox_backlog}${s.outbox_backlog ? `, oldest ${ago(s.outbox_oldest_seconds)}` : ""}`),
    ),
    h("h2", { text: "Checks" }),
    table("checks", ["Part", "State", "Detail"], s.checks.map((c) => [c.component, c.ok ? "ok" : "failing", c.detail])),
    h("h2", { text: "Who leads each job" }),
    table("leaders", ["Job", "Instance", "Live"], s.leaders.map((l) => [l.lease, l.holder, l.held ? "yes" : "no (nobody leads it)"])),
  );
}

// ---------- customers and the audit log, for operators and auditors ----------

async function customers(externalId) {
  const box = h("input", { id: "external-id", name: "external-id", value: externalId });
  const form = h("form", { role: "search", on: { submit: (ev) => {
    ev.preventDefault();
    location.hash = `#/customers/${encodeURIComponent(box.value.trim())}`;
  } } }, h("label", { for: "external-id" }, "The exchange's customer id", box), h("div", { class: "actions" }, h("button", { type: "submit" }, "Find")));
  if (!externalId) {
    show("Customers", form);
    return;
  }
  const found = (await api("GET", `/v1/customers?external_id=${encodeURIComponent(externalId)}`)).data;
  if (found.length === 0) {
    show("Customers", form, h("p", { id: "customer", text: `No customer ${externalId}.` }));
    return;
  }
  const c = found[0];
  const [balances, withdrawals, ledger] = await Promise.all([
    api("GET", `/v1/customers/${c.id}/balances`).then((p) => p.data),
    pagedTable("customer-withdrawals", ["Requested", "Withdrawal", "Amount", "Destination", "State"], `/v1/withdrawals?customer_id=${c.id}`, (w) => [
      when(w.created_at_ms), h("a", { href: `#/withdrawals/${w.id}`, text: w.id.slice(0, 8) }), `${w.amount_decimal} ${w.asset}`, h("span", { class: "mono", text: w.destination }), w.state,
    ]),
    pagedTable("ledger", ["When", "Kind", "Reference", "Account", "Change", "Balance after"], `/v1/customers/${c.id}/ledger`, (l) => [
      when(l.created_at_ms), l.kind, h("span", { class: "mono", text: l.reference }), l.account, `${l.side === "credit" ? "+" : "−"}${l.amount} ${l.asset}`, l.balance_after,
    ]),
  ]);
  show(
    "Customers",
    form,
    h("dl", { id: "customer" }, row("Customer", `${c.external_id}`), row("Id", h("span", { class: "mono", text: c.id })), row("Since", when(c.created_at_ms))),
    h("h2", { text: "Balances" }),
    table("balances", ["Asset", "Available", "In flight"], balances.map((b) => [b.asset, b.available_decimal, b.pending_decimal])),
    h("h2", { text: "Withdrawals" }),
    withdrawals,
    h("h2", { text: "Ledger (deposits, withdrawals, fees)" }),
    ledger,
  );
}

async function audit() {
  show("Audit log", h("p", { text: "Verifying every record and every row…" }));
  const v = await api("GET", "/v1/audit/verify");
  const after = Math.max(0, v.records - 50);
  const records = (await api("GET", `/v1/audit?after=${after}&limit=100`)).data;
  const verdict = v.intact
    ? notice("ok", `Intact: ${v.records} records chain up to ${v.head}, and every row matches its last audited state.`)
    : h("div", { class: "notice bad", role: "alert" },
        h("strong", { text: "The audit log does not verify." }),
        v.chain_break ? h("p", { text: `The hash chain breaks at record ${v.chain_break_at}: ${v.chain_break}. ${v.records} records verified before it.` }) : null,
        v.mismatch_count ? h("p", { text: `${v.mismatch_count} rows differ from their last audited state:` }) : null,
        v.mismatches.length ? h("ul", {}, v.mismatches.map((m) => h("li", { text: `${m.entity}: ${m.kind}` }))) : null,
      );
  verdict.id = "verdict";
  show(
    "Audit log",
    verdict,
    h("h2", { text: "Latest records" }),
    table("records", ["#", "When", "Who", "What", "On"], records.reverse().map((r) => [String(r.seq), when(r.at_ms), r.actor, r.action, r.subject])),
  );
}

// ---------- governance ----------

const scopeText = (sc) => (sc.kind === "global" ? "everything" : sc.kind === "asset" ? `asset ${sc.asset}` : `wallet ${sc.wallet}`);
const wlScope = (sc) => (sc.kind === "internal" ? `our own wallets on ${sc.chain}` : `customer ${sc.customer_id} on ${sc.chain}`);

/** `path: old → new` for every leaf that differs between two JSON values. */
function fieldDiff(x, y) {
  const flat = (v, prefix, out) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k, w] of Object.entries(v)) flat(w, prefix ? `${prefix}.${k}` : k, out);
    } else {
      out[prefix] = JSON.stringify(v ?? null);
    }
    return out;
  };
  const [a, b] = [flat(x, "", {}), flat(y, "", {})];
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return keys.filter((k) => (a[k] ?? "null") !== (b[k] ?? "null")).map((k) => `${k} ${a[k] ?? "null"} → ${b[k] ?? "null"}`);
}

/** JSON with every object's keys sorted: equal values give equal text, whatever the order
 * their keys came in (the live policy's and the signed entry's differ). */
function stable(v) {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable(v[k])}`).join(",")}}`;
  return JSON.stringify(v);
}

/** What a proposed change does, against what is live: one line per difference. */
function describeChange(c, g) {
  switch (c.change) {
    case "set_policy": {
      const lines = [];
      const live = (g.policy && g.policy.rules) || [];
      const next = c.policy.rules || [];
      const byName = (rules) => new Map(rules.map((r) => [r.name, r]));
      const [a, b] = [byName(live), byName(next)];
      for (const [name, r] of b) {
        if (!a.has(name)) lines.push(`adds rule ${name}: ${JSON.stringify(r)}`);
        else {
          const changed = fieldDiff(a.get(name), r);
          if (changed.length) lines.push(`changes rule ${name}: ${changed.join(", ")}`);
        }
      }
      for (const name of a.keys()) if (!b.has(name)) lines.push(`removes rule ${name}`);
      const order = (rules) => rules.map((r) => r.name).join(", ");
      if (order(live) !== order(next) && lines.length === 0) lines.push(`reorders the rules: ${order(next)}`);
      for (const k of ["velocity", "fees", "max_approval_lifetime_secs", "messages"]) {
        const [x, y] = [stable((g.policy || {})[k] ?? null), stable(c.policy[k] ?? null)];
        if (x !== y) lines.push(`changes ${k}: ${x} → ${y}`);
      }
      return [`policy version ${(g.policy && g.policy.version) || "none"} → ${c.policy.version}`, ...lines];
    }
    case "add_member":
      return [`adds member ${c.member.id} (${(c.member.roles || []).join(", ")}) with key ${c.member.public_key}`];
    case "remove_member":
      return [`removes member ${c.id}`];
    case "set_passkey":
      return [`sets ${c.id}'s passkey: credential ${c.passkey.credential_id} for ${c.passkey.origin}`];
    case "set_quorum":
      return [`admin quorum ${g.quorum} → ${c.quorum}`];
    case "whitelist_add":
      return [`whitelists ${c.label} ${c.address} for ${wlScope(c.scope)}, usable ${ago(Math.round(g.whitelist_delay_ms / 1000))} after it is committed`];
    case "whitelist_remove":
      return [`removes ${c.address} from the whitelist for ${wlScope(c.scope)}`];
    case "cancel_pending":
      return [`cancels the whitelist addition made by entry ${c.seq}`];
    case "asset_add":
      return [`registers ${JSON.stringify(c.asset)}`];
    case "asset_remove":
      return [`removes asset ${c.symbol} on ${c.chain}`];
    case "ledger_credit":
      return [`credits ${c.amount} base units of ${c.asset} to customer ${c.customer_id} (${c.reference})`];
    case "freeze":
      return [`freezes ${scopeText(c.scope)} until lifted${c.reason ? `: ${c.reason}` : ""}`];
    case "freeze_until":
      return [`freezes ${scopeText(c.scope)} until ${when(c.until)} (cannot be lifted earlier)${c.reason ? `: ${c.reason}` : ""}`];
    case "unfreeze":
      return [`lifts the freeze on ${scopeText(c.scope)}`];
    default:
      return [JSON.stringify(c)];
  }
}

/** `v` without its null fields (a rule's unset conditions). */
function compact(v) {
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null && x !== undefined));
}

/** Propose a change (it waits for its signatures like any other). */
async function proposeChange(change) {
  await api("POST", "/v1/governance/proposals", { change }, { idempotent: true });
  await governance();
}

/**
 * The other changes an admin proposes from the page: a new policy (the live one, edited as
 * JSON), an asset for the registry, a member added or removed, a freeze lifted. Each is a
 * proposal like the CLI's; members sign it on their own side.
 */
function otherProposals(g, out) {
  const forms = [];
  const policy = h("textarea", { id: "policy-json", name: "policy-json", rows: 12, spellcheck: "false", class: "mono" });
  const live = g.policy ? structuredClone(g.policy) : { version: 0, rules: [] };
  live.version += 1;
  policy.value = JSON.stringify(live, null, 2);
  forms.push(h("form", { id: "policy-form", on: submitting(out, async () => {
    let next;
    try {
      next = JSON.parse(policy.value);
    } catch (e) {
      throw new Error(`the policy is not JSON: ${e.message}`);
    }
    await proposeChange({ change: "set_policy", policy: next });
  }) },
    h("h3", { text: "Propose a policy" }),
    h("label", { for: "policy-json" }, "The policy in force with its version raised; edit it (JSON)", policy),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Propose the policy")),
    h("p", { class: "hint", text: "The proposal is shown as a diff against the policy in force; the admin quorum signs it." }),
  ));

  const chain = h("input", { id: "asset-chain", name: "asset-chain", value: "eip155:1", required: true });
  const symbol = h("input", { id: "asset-symbol", name: "asset-symbol", required: true, maxlength: 16 });
  const decimals = h("input", { id: "asset-decimals", name: "asset-decimals", inputmode: "numeric", required: true });
  const contract = h("input", { id: "asset-contract", name: "asset-contract" });
  forms.push(h("form", { id: "asset-form", on: submitting(out, async () => {
    const d = Number(decimals.value.trim());
    if (!Number.isInteger(d) || d < 0 || d > 77) throw new Error("decimals are a whole number from 0 to 77");
    const asset = { chain: chain.value.trim(), symbol: symbol.value.trim(), decimals: d };
    if (contract.value.trim()) asset.contract = contract.value.trim();
    await proposeChange({ change: "asset_add", asset });
  }) },
    h("h3", { text: "Propose an asset" }),
    h("label", { for: "asset-chain" }, "Chain (CAIP-2)", chain),
    h("label", { for: "asset-symbol" }, "Symbol", symbol),
    h("label", { for: "asset-decimals" }, "Decimals", decimals),
    h("label", { for: "asset-contract" }, "Token contract (empty: the chain's native coin)", contract),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Propose the asset")),
    h("p", { class: "hint", text: "The signer nodes move it only once it is registered and its time-lock has run." }),
  ));

  const id = h("input", { id: "member-id", name: "member-id", required: true, maxlength: 64 });
  const key = h("input", { id: "member-key", name: "member-key", required: true, class: "mono", pattern: "[0-9a-fA-F]{64}" });
  const roles = ["admin", "security_officer", "approver", "operator"].map((r) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "member-role", value: r }), ` ${r.replace("_", " ")}`));
  forms.push(h("form", { id: "member-form", on: submitting(out, async () => {
    const chosen = roles.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
    if (!chosen.length) throw new Error("choose at least one role");
    await proposeChange({ change: "add_member", member: { id: id.value.trim(), public_key: key.value.trim().toLowerCase(), roles: chosen } });
  }) },
    h("h3", { text: "Propose a member" }),
    h("label", { for: "member-id" }, "Member id", id),
    h("label", { for: "member-key" }, "Their Ed25519 public key (hex, from strongroom governance keygen on their machine)", key),
    h("fieldset", {}, h("legend", { text: "Roles" }), roles),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Propose the member")),
    h("p", { class: "hint", text: "A change to who governs: the admin quorum signs it with the keys they hold, not with passkeys." }),
  ));

  const removable = h("select", { id: "member-remove", name: "member-remove" }, g.members.map((m) => h("option", { value: m.id }, m.id)));
  forms.push(h("form", { id: "member-remove-form", on: submitting(out, () => proposeChange({ change: "remove_member", id: removable.value })) },
    h("h3", { text: "Propose removing a member" }),
    h("label", { for: "member-remove" }, "Member", removable),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Propose the removal")),
  ));

  // Freezes until lifted: the quorum lifts them (time-boxed ones end by themselves).
  const timed = new Set(g.frozen_until.map((f) => JSON.stringify(f.scope)));
  for (const f of g.freezes.filter((x) => !timed.has(JSON.stringify(x)))) {
    forms.push(h("form", { class: "unfreeze", on: submitting(out, () => proposeChange({ change: "unfreeze", scope: f })) },
      h("div", { class: "actions" }, h("button", { type: "submit" }, `Propose lifting the freeze on ${scopeText(f)}`)),
    ));
  }
  return forms;
}

/** Changes that decide who governs: only the keys members hold sign them, never a passkey. */
const WHO_GOVERNS = new Set(["add_member", "remove_member", "set_passkey", "set_quorum"]);

/**
 * The open proposal, read from the bytes its hash covers and hashed here: what is shown is
 * what a member signs. A member whose passkey is in governance signs it here (the passkey's
 * challenge is the hash this page computed); the page never holds a member's key.
 */
async function proposal(g, out) {
  const p = g.proposal;
  let read;
  try {
    read = await readEntry(p.signed, p.hash);
  } catch (e) {
    return h("div", { id: "proposal" }, notice("error", `Entry ${p.seq}: ${e.message}`));
  }
  const { entry, hash } = read;
  const mine = me.member && g.members.find((m) => m.id === me.member);
  const parts = [
    h("p", { text: `Entry ${entry.seq}, proposed ${when(entry.at)}:` }),
    h("ul", { id: "diff" }, describeChange(entry.change, g).map((l) => h("li", { text: l }))),
    h("p", { id: "signed-by", text: `Signed by ${p.signed_by.length ? p.signed_by.join(", ") : "nobody yet"}; ${p.missing || "complete"}.` }),
    h("p", {}, "Entry hash (computed in this browser from the entry): ", h("span", { class: "mono", text: bytesToHex(hash) })),
  ];
  if (WHO_GOVERNS.has(entry.change.change)) {
    parts.push(h("p", { class: "hint", text: "A change to members, passkeys or the quorum is signed with the keys members hold (strongroom governance sign), never with a passkey." }));
  } else if (mine && mine.passkey && !p.signed_by.includes(mine.id)) {
    const button = h("button", { type: "button", id: "sign-proposal" }, `Sign as ${mine.id} with my passkey`);
    button.addEventListener("click", async () => {
      out.replaceChildren(notice("ok", "Waiting for your passkey…"));
      button.disabled = true;
      try {
        const cred = await navigator.credentials.get({ publicKey: {
          challenge: hash,
          rpId: mine.passkey.rp_id,
          allowCredentials: [{ type: "public-key", id: fromBase64url(mine.passkey.credential_id) }],
          userVerification: "required",
          timeout: 300000,
        } });
        const r = cred.response;
        const done = await api("POST", `/v1/governance/proposals/${entry.seq}/signoffs`, {
          member: mine.id,
          passkey: {
            authenticator_data: b64(r.authenticatorData),
            client_data_json: b64(r.clientDataJSON),
            signature: b64(r.signature),
          },
        }, { idempotent: true });
        await governance(done.committed ? `Signed: entry ${entry.seq} is committed.` : `Signed: entry ${entry.seq} waits for more signatures.`);
      } catch (e) {
        button.disabled = false;
        out.replaceChildren(failure(e));
      }
    });
    parts.push(h("div", { class: "actions" }, button));
  } else if (!mine || !mine.passkey) {
    parts.push(h("p", { class: "hint", text: "Members sign on their own machines (strongroom governance sign), or here with a passkey the log registers for them; the page holds no member's key." }));
  }
  return h("div", { id: "proposal" }, ...parts);
}

/** One line for a committed entry (a policy is named, not compared with today's). */
function logLine(c, g) {
  if (c.change === "set_policy") return `policy version ${c.policy.version} (${c.policy.rules.length} rules)`;
  if (c.change === "set_quorum") return `admin quorum ${c.quorum}`;
  return describeChange(c, g)[0];
}

async function governance(done) {
  const [g, summary] = await Promise.all([api("GET", "/v1/governance"), api("GET", "/v1/ops/summary")]);
  const signers = summary.checks.find((c) => c.component === "signers");
  if (!g.installed) {
    show("Governance", h("p", { text: "No governance is installed: the signer nodes sign under no policy." }));
    return;
  }
  const out = h("div", { "aria-live": "polite" }, done ? notice("ok", done) : null);
  const parts = [
    h("dl", { id: "head" },
      row("Entries", String(g.seq)),
      row("Genesis pin", h("span", { class: "mono", text: g.pin })),
      row("Admin quorum", String(g.quorum)),
      row("Whitelist time-lock", ago(Math.round(g.whitelist_delay_ms / 1000))),
      row("The signer nodes", h("span", { id: "nodes", text: signers ? signers.detail : "no signer nodes are configured" })),
    ),
    h("h2", { text: "Waiting for signatures" }),
  ];
  if (g.proposal) {
    parts.push(await proposal(g, out));
  } else {
    parts.push(h("p", { id: "proposal", text: "Nothing." }));
  }
  parts.push(out);
  // Each freeze's reason, from the entry that made it (the latest for its scope).
  const why = (scope) => {
    const key = JSON.stringify(scope);
    const e = [...g.entries].reverse().find((x) => (x.change.change === "freeze" || x.change.change === "freeze_until") && JSON.stringify(x.change.scope) === key);
    return e && e.change.reason ? `: ${e.change.reason}` : "";
  };
  const timed = new Set(g.frozen_until.map((f) => JSON.stringify(f.scope)));
  const freezes = g.freezes.filter((f) => !timed.has(JSON.stringify(f))).map((f) => `${scopeText(f)}, until lifted${why(f)}`);
  const boxed = g.frozen_until.map((f) => `${scopeText(f.scope)} until ${when(f.until_ms)} (${remaining(f.until_ms)} left)${why(f.scope)}`);
  parts.push(
    h("h2", { text: "Freezes" }),
    freezes.length || boxed.length
      ? h("ul", { id: "freezes" }, [...freezes, ...boxed].map((t) => h("li", { text: t })))
      : h("p", { id: "freezes", text: "None: withdrawals move under the policy." }),
  );
  if (!g.proposal && (me.role === "operator" || me.role === "admin")) {
    const scope = h("select", { id: "freeze-scope", name: "freeze-scope" },
      h("option", { value: "global" }, "Everything"), h("option", { value: "asset" }, "One asset"), h("option", { value: "wallet" }, "One wallet"));
    const what = h("input", { id: "freeze-what", name: "freeze-what", placeholder: "ETH or hot-eth-1" });
    const minutes = h("input", { id: "freeze-minutes", name: "freeze-minutes", inputmode: "numeric" });
    const reason = h("textarea", { id: "freeze-reason", name: "freeze-reason", rows: 2, maxlength: 500, required: true });
    parts.push(h("form", { id: "freeze-form", on: submitting(out, async () => {
        const sc = scope.value === "global" ? { kind: "global" } : scope.value === "asset" ? { kind: "asset", asset: what.value.trim() } : { kind: "wallet", wallet: what.value.trim() };
        const m = minutes.value.trim();
        const why = reason.value.trim();
        const change = m
          ? { change: "freeze_until", scope: sc, until: Date.now() + Number(m) * 60000, reason: why }
          : { change: "freeze", scope: sc, reason: why };
        await api("POST", "/v1/governance/proposals", { change }, { idempotent: true });
        await governance();
    }) },
      h("h3", { text: "Propose a freeze" }),
      h("label", { for: "freeze-scope" }, "What", scope),
      h("label", { for: "freeze-what" }, "Asset or wallet (not for everything)", what),
      h("label", { for: "freeze-minutes" }, "For how many minutes (empty: until lifted by the quorum)", minutes),
      h("label", { for: "freeze-reason" }, "Why (kept in the log with the freeze)", reason),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "danger" }, "Propose the freeze")),
      h("p", { class: "hint", text: "One security officer's signature commits it; push it to the nodes with strongroom governance push." }),
    ));
    // A whitelist addition: our own wallets (internal) on a chain, or one customer's.
    const wlChain = h("input", { id: "wl-chain", name: "wl-chain", value: "eip155:1" });
    const wlAddress = h("input", { id: "wl-address", name: "wl-address", required: true });
    const wlLabel = h("input", { id: "wl-label", name: "wl-label", required: true, maxlength: 64 });
    const wlCustomer = h("input", { id: "wl-customer", name: "wl-customer" });
    parts.push(h("form", { id: "whitelist-form", on: submitting(out, async () => {
      const customer = wlCustomer.value.trim();
      const scope = customer
        ? { kind: "customer", customer_id: customer, chain: wlChain.value.trim() }
        : { kind: "internal", chain: wlChain.value.trim() };
      const change = { change: "whitelist_add", scope, address: wlAddress.value.trim(), label: wlLabel.value.trim() };
      await api("POST", "/v1/governance/proposals", { change }, { idempotent: true });
      await governance();
    }) },
      h("h3", { text: "Propose a whitelist address" }),
      h("label", { for: "wl-chain" }, "Chain (CAIP-2)", wlChain),
      h("label", { for: "wl-address" }, "Address", wlAddress),
      h("label", { for: "wl-label" }, "Label", wlLabel),
      h("label", { for: "wl-customer" }, "For one customer (their id; empty: our own wallets)", wlCustomer),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Propose the address")),
      h("p", { class: "hint", text: "The admin quorum signs it; it is usable only after the time-lock." }),
    ));
    parts.push(...otherProposals(g, out));
  }
  parts.push(
    h("h2", { text: "Members" }),
    table("members", ["Member", "Roles", "Key", "Passkey"], g.members.map((m) => [m.id, m.roles.join(", "), h("span", { class: "mono", text: `${m.public_key.slice(0, 16)}…` }), m.passkey ? `for ${m.passkey.origin}` : "none"])),
    h("h2", { text: "Policy" }),
    g.policy
      ? table("rules", ["Rule", "When", "Then"], g.policy.rules.map((r) => [r.name, stable(compact(r.when || {})), stable(r.action)]))
      : h("p", { id: "rules", text: "No policy: every withdrawal is blocked." }),
    h("h2", { text: "Whitelist" }),
    g.whitelist.length
      ? table("whitelist", ["Label", "Address", "For", "Usable"], g.whitelist.map((w) => [w.label, h("span", { class: "mono", text: w.address }), wlScope(w.scope), w.usable ? "yes" : `from ${when(w.usable_from_ms)} (in ${remaining(w.usable_from_ms)})`]))
      : h("p", { id: "whitelist", text: "Empty." }),
    h("h2", { text: "The log" }),
    table("log", ["Entry", "When", "Change", "Signed by"], g.entries.map((e) => [String(e.seq), when(e.at), logLine(e.change, g), e.signoffs.map((x) => (x.passkey ? `${x.member} (passkey)` : x.member)).join(", ")])),
  );
  show("Governance", ...parts);
}

// ---------- customers ----------

async function mine() {
  const parts = [];
  if (me.withdrawals_locked_until) {
    parts.push(notice("bad", `Withdrawals are locked until ${new Date(me.withdrawals_locked_until).toLocaleString()} (${remaining(me.withdrawals_locked_until)} from now) after a security change (${me.last_security_change || "a change to your account"}). This protects you if someone else made it.`));
    parts.at(-1).id = "lock";
  }
  if (me.whitelist_only) {
    parts.push(h("p", { id: "whitelist-only", text: "Whitelist-only mode is on: we pay only addresses on your whitelist." }));
  }
  parts.push(await pagedTable("mine", ["Requested", "Amount", "Destination", "Where it stands", "Transaction"], "/v1/me/withdrawals", (w) => [
    when(w.created_at_ms),
    `${w.amount_decimal} ${w.asset}`,
    h("span", { class: "mono", text: w.destination }),
    w.status,
    w.txid ? h("span", { class: "mono", text: w.txid }) : "—",
  ], "No withdrawals yet."));
  show("My withdrawals", ...parts);
}

/** A form of labelled fields: `fields` are [id, label, attrs]; `submit` gets the values. */
function smallForm(title, fields, button, submit, out) {
  const inputs = fields.map(([id, label, attrs]) => [id, label, h("input", { id, name: id, ...(attrs || {}) })]);
  return h(
    "form",
    { on: submitting(out, async () => {
            await submit(Object.fromEntries(inputs.map(([id, , el]) => [id, el.value.trim()])));
}) },
    title ? h("h3", { text: title }) : null,
    inputs.map(([id, label, el]) => h("label", { for: id }, label, el)),
    h("div", { class: "actions" }, h("button", { type: "submit" }, button)),
  );
}

/** The customer's own security settings: two-factor codes, the anti-phishing code, devices
 * and the withdrawal whitelist. */
async function customerSecurity(out) {
  const parts = [];
  const refresh = async () => {
    await loadMe();
    await security();
  };
  // Two-factor codes (TOTP).
  parts.push(h("h2", { text: "Two-factor codes" }));
  if (me.totp_enabled) {
    parts.push(
      h("p", { text: `On. ${me.recovery_codes_left} recovery codes left.` }),
      smallForm(null, [["totp-off", "A current code, to turn it off", { inputmode: "numeric", autocomplete: "one-time-code" }]], "Turn off two-factor codes",
        async (v) => {
          await api("POST", "/v1/me/totp/disable", { code: v["totp-off"] });
          await refresh();
        }, out),
    );
  } else {
    const start = h("button", { type: "button" }, "Turn on two-factor codes");
    const area = h("div", { id: "totp-setup" });
    start.addEventListener("click", async () => {
      out.replaceChildren();
      try {
        const setup = await api("POST", "/v1/me/totp");
        start.disabled = true;
        area.replaceChildren(
          h("p", { text: "Add this key to your authenticator app, then enter the code it shows." }),
          h("p", {}, "Key: ", h("code", { id: "totp-secret", text: setup.secret })),
          h("p", {}, "Or this address: ", h("code", { text: setup.otpauth_uri })),
          smallForm(null, [["totp-code", "Code from the app", { inputmode: "numeric", autocomplete: "one-time-code" }]], "Confirm",
            async (v) => {
              const r = await api("POST", "/v1/me/totp/confirm", { code: v["totp-code"] });
              await loadMe();
              renderChrome();
              area.replaceChildren(
                notice("ok", "Two-factor codes are on. Keep these recovery codes somewhere safe: each works once, and they are shown only now."),
                h("ul", { id: "recovery-codes", class: "codes" }, r.recovery_codes.map((c) => h("li", { text: c }))),
              );
            }, out),
        );
      } catch (e) {
        out.replaceChildren(failure(e));
      }
    });
    parts.push(h("p", { text: "Off." }), h("div", { class: "actions" }, start), area);
  }
  // The anti-phishing code.
  parts.push(
    h("h2", { text: "Anti-phishing code" }),
    h("p", { class: "hint", text: "A word only you and we know: shown on every page here and at the top of every e-mail we send you." }),
    smallForm(null, [["anti-phishing-code", "Your code (4 to 32 characters)", { value: me.anti_phishing_code || "", maxlength: 32 }]], "Save code",
      async (v) => {
        await api("POST", "/v1/me/anti-phishing-code", { anti_phishing_code: v["anti-phishing-code"] });
        await refresh();
      }, out),
  );
  // Devices.
  const devices = (await api("GET", "/v1/me/devices")).data;
  parts.push(
    h("h2", { text: "Devices" }),
    h("ul", { id: "devices" }, devices.map((d) => {
      const item = h("li", {}, `${d.name}, last seen ${d.last_seen} from ${d.last_ip}${d.current ? " (this one)" : ""} `);
      if (!d.current) {
        item.append(h("button", { type: "button", class: "secondary", "aria-label": `Revoke ${d.name}`, on: { click: async () => {
          try {
            await api("DELETE", `/v1/me/devices/${encodeURIComponent(d.id)}`);
            await security();
          } catch (e) {
            out.replaceChildren(failure(e));
          }
        } } }, "Revoke"));
      }
      return item;
    })),
  );
  // The withdrawal whitelist and whitelist-only mode.
  const list = (await api("GET", "/v1/me/whitelist")).data;
  parts.push(
    h("h2", { text: "Withdrawal whitelist" }),
    list.length
      ? h("ul", { id: "whitelist" }, list.map((e) => h("li", {},
          `${e.label || "(no label)"}: `,
          h("span", { class: "mono", text: e.address }),
          ` on ${e.chain}, ${e.usable ? "usable" : `usable from ${new Date(e.usable_at).toLocaleString()} (in ${remaining(e.usable_at)})`} `,
          h("button", { type: "button", class: "secondary", "aria-label": `Remove ${e.label || e.address}`, on: { click: async () => {
            try {
              await api("DELETE", `/v1/me/whitelist/${encodeURIComponent(e.id)}`);
              await refresh();
            } catch (err) {
              out.replaceChildren(failure(err));
            }
          } } }, "Remove"),
        )))
      : h("p", { id: "whitelist", text: "No addresses yet." }),
    smallForm("Add an address", [["wl-asset", "Asset", { value: "ETH" }], ["wl-address", "Address"], ["wl-label", "Label"]], "Add to whitelist",
      async (v) => {
        await api("POST", "/v1/me/whitelist", { asset: v["wl-asset"], address: v["wl-address"], label: v["wl-label"] || null });
        await refresh();
      }, out),
  );
  const mode = me.whitelist_only
    ? me.whitelist_off_at
      ? `On until ${new Date(me.whitelist_off_at).toLocaleString()}, ${remaining(me.whitelist_off_at)} from now (turning off waits out the delay).`
      : "On: only whitelisted addresses are paid."
    : "Off: any address may be paid.";
  parts.push(h("p", { id: "whitelist-mode", text: `Whitelist-only mode: ${mode}` }));
  if (!me.whitelist_only) {
    parts.push(h("div", { class: "actions" }, h("button", { type: "button", on: { click: async () => {
      try {
        await api("POST", "/v1/me/whitelist/mode", { enabled: true });
        await refresh();
      } catch (e) {
        out.replaceChildren(failure(e));
      }
    } } }, "Turn on whitelist-only mode")));
  } else if (!me.whitelist_off_at) {
    parts.push(smallForm(null, [["wl-off-code", "A current two-factor code, to turn it off", { inputmode: "numeric" }]], "Turn off whitelist-only mode",
      async (v) => {
        await api("POST", "/v1/me/whitelist/mode", { enabled: false, totp_code: v["wl-off-code"] });
        await refresh();
      }, out));
  }
  return parts;
}

// ---------- security settings ----------

async function security() {
  const keys = (await api("GET", "/v1/me/passkeys")).data;
  const out = h("div", { "aria-live": "polite" });
  const list = keys.length
    ? h("ul", { id: "passkeys" }, keys.map((k) => {
        const item = h("li", {}, `${k.name}, added ${k.added_at} `);
        if (me.role) {
          const btn = h("button", { type: "button", class: "secondary" }, `Governance key for ${k.name}`);
          btn.addEventListener("click", async () => {
            try {
              const spec = await api("GET", `/v1/me/passkeys/${encodeURIComponent(k.id)}/governance-key`);
              item.append(
                h("p", { class: "hint", text: "Give this to the admins: they add it to the governance log (set_passkey) so the signer nodes verify your approvals." }),
                h("pre", { class: "governance-key", text: JSON.stringify(spec, null, 2) }),
              );
              btn.disabled = true;
            } catch (e) {
              out.replaceChildren(failure(e));
            }
          });
          item.append(btn);
        }
        return item;
      }))
    : h("p", { id: "passkeys", text: "No passkeys yet." });
  const name = h("input", { id: "passkey-name", name: "passkey-name", value: "console passkey" });
  const add = h(
    "form",
    { on: submitting(out, async () => {
            const start = await api("POST", "/v1/me/passkeys/options");
            const cred = await navigator.credentials.create(creationOptions(start.options));
            await api("POST", "/v1/me/passkeys", {
              ceremony_id: start.ceremony_id,
              credential: credentialJson(cred),
              name: name.value,
            });
            await loadMe();
            await security();
}) },
    h("label", { for: "passkey-name" }, "Name for a new passkey", name),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Add a passkey")),
  );
  const mineOnly = me.role ? [] : await customerSecurity(out);
  show(
    "Security",
    h("dl", {},
      row("Signed in as", me.email),
      me.role ? row("Role", me.role) : null,
      me.member ? row("Approves as", me.member) : null,
      row("Two-factor code (TOTP)", me.totp_enabled ? "on" : "off"),
      row("Passkeys", String(me.passkeys)),
    ),
    ...mineOnly,
    h("h2", { text: "Passkeys" }),
    list,
    add,
    out,
  );
}

// ---------- routing ----------

async function route() {
  const hash = location.hash || "#/";
  renderChrome();
  try {
    if (!me && hash !== "#/signin") {
      location.hash = "#/signin";
      return;
    }
    if (hash === "#/signin") return signIn();
    if (hash === "#/approvals") return await approvals();
    if (hash === "#/security") return await security();
    if (hash === "#/reviews") return await reviews();
    if (hash === "#/mine") return await mine();
    if (hash === "#/dashboard") return await dashboard();
    if (hash === "#/governance") return await governance();
    if (hash === "#/audit") return await audit();
    if (hash.startsWith("#/customers")) return await customers(decodeURIComponent(hash.slice("#/customers".length).replace(/^\//, "")));
    const rv = hash.match(/^#\/reviews\/([0-9a-f-]{36})$/);
    if (rv) return await review(rv[1]);
    const m = hash.match(/^#\/withdrawals\/([0-9a-f-]{36})$/);
    if (m) return await withdrawal(m[1]);
    location.hash = home();
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401) {
      me = null;
      location.hash = "#/signin";
      return;
    }
    show("Something went wrong", failure(e));
  }
}

window.addEventListener("hashchange", route);
loadMe().then(route, (e) => show("Something went wrong", failure(e)));
