// The console in a real browser (Debian's chromium, driven by playwright-core), one phase per
// run; crates/cli/tests/console.rs sets up `strongroom dev` and calls each phase with:
//   CONSOLE_URL   https://localhost:PORT
//   CHROMIUM      the browser (never a downloaded one)
//   WORK          a folder for this run (screenshots on failure)
//   SCREENSHOTS   optional: a folder for a screenshot of each main page (docs/screenshots)
//   VECTORS       crates/core/tests/vectors/intent-v1.json
//   DESTINATION   the withdrawal's destination
//   EMAIL, PASSWORD, WITHDRAWAL, CREDENTIAL (phase "approve": the exported passkey, JSON),
//   WITHDRAWAL2 (phase "approve": one to deny)
// It prints one JSON line with what the Rust test needs next, and exits non-zero on the first
// failed check.

import { createHash, createHmac, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import tls from "node:tls";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("CONSOLE_URL");
const phase = process.argv[2];

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

/** The SHA-256 of the server certificate's public key (base64), as chromium's
 * --ignore-certificate-errors-spki-list takes it. */
async function serverSpki() {
  const url = new URL(base);
  const socket = tls.connect({ host: url.hostname, port: Number(url.port), servername: url.hostname, rejectUnauthorized: false });
  await new Promise((ok, fail) => {
    socket.once("secureConnect", ok);
    socket.once("error", fail);
  });
  const cert = new X509Certificate(socket.getPeerCertificate(true).raw);
  socket.destroy();
  const spki = cert.publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

async function launch() {
  const spki = await serverSpki();
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      // The dev CA's certificate, by its key: trusted like a real one (WebAuthn refuses pages
      // with certificate errors, so ignoring errors would not do).
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
  });
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/.test(m.text())) violations.push(m.text());
  });
  page.on("pageerror", (e) => violations.push(`page error: ${e.message}`));
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { browser, page, cdp, authenticatorId, violations };
}

/** A screenshot of a main page as it is now, for the docs (when SCREENSHOTS is set). */
async function shot(page, name) {
  const dir = process.env.SCREENSHOTS;
  if (!dir) return;
  await page.setViewportSize({ width: 1200, height: 900 });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: `${dir}/${name}.png`, fullPage: false });
}

/** axe-core on the page as it is: no serious or critical violation. */
async function accessible(page, where) {
  await page.evaluate(readFileSync(require.resolve("axe-core/axe.min.js"), "utf8"));
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = r.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(bad.length === 0, `${where}: accessibility: ${JSON.stringify(bad.map((v) => [v.id, v.nodes.map((n) => n.target)]))}`);
  // The rest (moderate and minor), by rule id, for the record.
  return r.violations.map((v) => `${v.id} (${v.impact})`);
}

/** Open the console and sign in with EMAIL and PASSWORD (and a two-factor code). */
async function signIn(page, code) {
  await page.goto(`${base}/`);
  await page.getByLabel("E-mail").fill(env("EMAIL"));
  await page.getByLabel("Password").fill(env("PASSWORD"));
  if (code) await page.getByLabel(/^Two-factor code/).fill(code);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

async function signInWithPassword(page) {
  await signIn(page);
  await page.getByRole("link", { name: "Approvals" }).waitFor();
}

async function openWithdrawal(page, id) {
  // A fresh load, so nothing shown before can pass for this page.
  await page.goto("about:blank");
  await page.goto(`${base}/console/#/withdrawals/${id}`);
  await page.locator("#verification").waitFor();
}

/** A passkey made on the security page (`whileShown` runs with its list on the page): its
 * governance key, which the admins put in the log, and the credential for later phases. */
async function governancePasskey(page, cdp, authenticatorId, whileShown = async () => {}) {
  await page.getByRole("link", { name: "Security" }).click();
  await page.getByRole("button", { name: "Add a passkey" }).click();
  await page.locator("#passkeys li").first().waitFor();
  await whileShown();
  await page.getByRole("button", { name: /^Governance key for/ }).click();
  const governance_key = JSON.parse(await page.locator("pre.governance-key").innerText());
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  check(credentials.length === 1, "one credential on the authenticator");
  return { governance_key, credential: credentials[0] };
}

/** Phase 1: headers, the decoder against the published vectors, sign-in, the inbox, the
 * detail and its checks, accessibility, a lying server, and a passkey made for governance. */
async function check_and_enrol() {
  const { browser, page, cdp, authenticatorId, violations } = await launch();
  const out = {};
  try {
    // The page and its headers: strict CSP, no framing, the root sends you to the console.
    const resp = await page.goto(`${base}/`);
    check(resp.url() === `${base}/console/`, `/ leads to the console (${resp.url()})`);
    const csp = resp.headers()["content-security-policy"] || "";
    check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'") && !csp.includes("unsafe"), `console CSP: ${csp}`);
    check(resp.headers()["x-frame-options"] === "DENY", "X-Frame-Options");
    const apiCsp = await page.evaluate(async () => (await fetch("/v1/health")).headers.get("content-security-policy"));
    check((apiCsp || "").includes("default-src 'none'"), `API CSP: ${apiCsp}`);

    // The decoder, in this browser, against the published vectors.
    const vectors = JSON.parse(readFileSync(env("VECTORS"), "utf8"));
    const results = await page.evaluate(async (v) => {
      const m = await import("/console/intent.js");
      const valid = [];
      for (const t of v.valid) {
        const bytes = m.hexToBytes(t.encoding_hex);
        const d = m.decodeIntent(bytes);
        valid.push({
          hash: await m.intentHash(bytes),
          destination: d.destination,
          amount: d.amount,
          request_id: d.request_id,
          contract: d.asset.contract,
        });
      }
      const invalid = v.invalid.map((t) => {
        try {
          m.decodeIntent(m.hexToBytes(t.encoding_hex));
          return "accepted";
        } catch (e) {
          return e.message;
        }
      });
      const keccakEmpty = m.bytesToHex(m.keccak256(new Uint8Array(0)));
      const keccakAbc = m.bytesToHex(m.keccak256(new TextEncoder().encode("abc")));
      const long = m.bytesToHex(m.keccak256(new Uint8Array(200).fill(0x61)));
      return { valid, invalid, keccakEmpty, keccakAbc, long };
    }, vectors);
    vectors.valid.forEach((t, i) => {
      const got = results.valid[i];
      check(got.hash === t.hash_hex, `vector ${t.description}: hash ${got.hash}`);
      check(got.destination === t.intent.destination.canonical, `vector ${t.description}: destination`);
      check(got.amount === t.intent.amount, `vector ${t.description}: amount`);
      check(got.request_id === t.intent.request_id, `vector ${t.description}: request id`);
      check(got.contract === (t.intent.asset.contract ? t.intent.asset.contract.canonical : null), `vector ${t.description}: contract`);
    });
    vectors.invalid.forEach((t, i) => check(results.invalid[i] === t.error, `invalid vector ${t.description}: ${results.invalid[i]}`));
    check(results.keccakEmpty === "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470", "keccak256('')");
    check(results.keccakAbc === "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45", "keccak256('abc')");
    // Two blocks (200 bytes of "a"), as pycryptodome's Keccak-256 computes it.
    check(results.long === "96ea54061def936c4be90b518992fdc6f12f535068a256229aca54267b4d084d", "keccak256 over two blocks");

    // Signing in; a wrong password is refused with the server's reason.
    await page.getByLabel("E-mail").fill(env("EMAIL"));
    await page.getByLabel("Password").fill("not the password at all");
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.getByRole("alert").waitFor();
    out.axe_signin = await accessible(page, "sign-in");
    await signInWithPassword(page);

    // The inbox lists the withdrawal, decoded here.
    const id = env("WITHDRAWAL");
    await page.getByRole("link", { name: "Approvals" }).click();
    const link = page.getByRole("link", { name: id.slice(0, 8) });
    await link.waitFor();
    const rowText = await page.locator("tbody tr").filter({ has: link }).innerText();
    check(rowText.includes("0.5 ETH") && rowText.includes("0 of 2"), `inbox row: ${rowText}`);
    out.axe_inbox = await accessible(page, "inbox");
    await shot(page, "approver-inbox");

    // The detail: decoded from the bytes, hash recomputed, the policy's reason.
    await link.click();
    await page.locator("#verification").waitFor();
    const verified = await page.locator("#verification").innerText();
    check(verified.includes("matches"), `verification: ${verified}`);
    const intent = await page.locator("#intent").innerText();
    check(intent.includes("0.5 ETH") && intent.includes(env("DESTINATION")), `intent: ${intent}`);
    out.registry = await page.locator("#registry").innerText();
    check(out.registry === "in the signed asset registry", `registry: ${out.registry}`);
    const note = await page.locator("#destination-note").innerText();
    check(note.includes("not on any whitelist") && note.includes("first withdrawal"), `destination note: ${note}`);
    const policy = await page.locator("#policy").innerText();
    check(policy.includes("large-eth") && policy.includes("0 of 2"), `policy: ${policy}`);
    out.axe_detail = await accessible(page, "withdrawal");
    await shot(page, "approver-withdrawal");

    // Until the admins put the approver's passkey in governance, there is nothing to sign
    // with, and the page says why.
    await page.getByRole("button", { name: "Approve with my passkey" }).click();
    await page.getByRole("alert").waitFor();
    out.before_governance = await page.getByRole("alert").innerText();

    // A lying server: the withdrawal's fields say another destination than its intent. The
    // page says so and will not approve.
    const attacker = "0x000000000000000000000000000000000000dEaD";
    await page.route(`${base}/v1/withdrawals/${id}`, async (route) => {
      const r = await route.fetch();
      const json = await r.json();
      json.destination = attacker;
      await route.fulfill({ response: r, json });
    });
    await openWithdrawal(page, id);
    const lie = await page.locator("#verification").innerText();
    check(lie.includes("does not match") && lie.includes(attacker), `lie shown: ${lie}`);
    check(await page.getByRole("button", { name: "Approve with my passkey" }).isDisabled(), "approve disabled on a lie");
    // The shown destination is the intent's, not the server's.
    check(!(await page.locator("#intent").innerText()).includes(attacker), "the intent's destination is shown");
    await page.unroute(`${base}/v1/withdrawals/${id}`);

    // A passkey for governance: made on the security page, its governance key shown.
    Object.assign(out, await governancePasskey(page, cdp, authenticatorId, async () => {
      out.axe_security = await accessible(page, "security");
    }));
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/check-and-enrol.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** Phase 2: the passkey is in governance now. Sign in with it (a second factor), refuse a
 * challenge that is not the approval's message, then approve. */
async function approve() {
  const { browser, page, cdp, authenticatorId, violations } = await launch();
  const out = {};
  try {
    await cdp.send("WebAuthn.addCredential", { authenticatorId, credential: JSON.parse(env("CREDENTIAL")) });
    const id = env("WITHDRAWAL");
    const signCount = async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials[0].signCount;

    // Signed in with a password only: the passkey signs, but the server keeps approvals to
    // sessions with a second factor.
    await signInWithPassword(page);
    await openWithdrawal(page, id);
    await page.getByRole("button", { name: "Approve with my passkey" }).click();
    await page.getByRole("alert").waitFor();
    out.without_2fa = await page.getByRole("alert").innerText();
    await page.getByRole("button", { name: "Sign out" }).click();

    // Signed in with the passkey.
    await page.getByLabel("E-mail").fill(env("EMAIL"));
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await page.getByRole("link", { name: "Approvals" }).waitFor();

    // A lying server asks the passkey to sign for another policy version than it says: the
    // page recomputes the message, sees the challenge is not it, and never asks the passkey.
    await page.route(`${base}/v1/withdrawals/${id}/approval-challenge`, async (route) => {
      const r = await route.fetch();
      const json = await r.json();
      json.policy_version += 1;
      await route.fulfill({ response: r, json });
    });
    await openWithdrawal(page, id);
    const before = await signCount();
    await page.getByRole("button", { name: "Approve with my passkey" }).click();
    await page.getByRole("alert").waitFor();
    out.refused = await page.getByRole("alert").innerText();
    check(out.refused.includes("refused"), `refusal: ${out.refused}`);
    check((await signCount()) === before, "the passkey signed nothing");
    await page.unroute(`${base}/v1/withdrawals/${id}/approval-challenge`);

    // The honest path.
    await openWithdrawal(page, id);
    await page.getByRole("button", { name: "Approve with my passkey" }).click();
    await page.locator("#approvals li").first().waitFor();
    out.approvals = await page.locator("#approvals").innerText();
    check(out.approvals.includes("ann"), `approvals: ${out.approvals}`);
    check((await signCount()) > before, "the passkey signed the approval");

    // Another withdrawal, denied with a reason: cancelled for everyone, and the page says who
    // denied it and why.
    const other = env("WITHDRAWAL2");
    await openWithdrawal(page, other);
    await page.getByLabel(/^Why/).fill("the customer says this is not theirs");
    out.axe_deny = await accessible(page, "deny");
    await page.getByRole("button", { name: "Deny this withdrawal" }).click();
    await page.getByText(/^Denied by ann/).waitFor();
    out.denied = await page.getByText(/^Denied by ann/).innerText();
    check(!(await page.getByRole("button", { name: "Deny this withdrawal" }).count()), "no deny button once cancelled");
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/approve.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** An analyst works the review queue: two paused withdrawals (REVIEW1, REVIEW2); the first
 * assigned, noted and released, the second rejected with a note. */
async function analyst() {
  const { browser, page, violations } = await launch();
  const out = {};
  try {
    await signIn(page);
    await page.getByRole("link", { name: "Review queue" }).waitFor();
    const [first, second] = [env("REVIEW1"), env("REVIEW2")];
    await page.getByRole("link", { name: first.slice(0, 8) }).waitFor();
    check((await page.locator("tbody tr").count()) === 2, "two withdrawals wait for a review");
    out.queue = await page.locator("tbody").innerText();
    check(out.queue.includes("rule:new-destination"), `queue: ${out.queue}`);
    out.axe_queue = await accessible(page, "review queue");

    await page.getByRole("link", { name: first.slice(0, 8) }).click();
    await page.locator("#reasons").waitFor();
    out.reasons = await page.locator("#reasons").innerText();
    check(out.reasons.includes("rule:new-destination"), `reasons: ${out.reasons}`);
    check((await page.locator("#features").innerText()).includes("new_destination"), "features shown");
    check((await page.locator("#history tbody tr").count()) === 2, "the customer's history");
    check((await page.locator("#review").innerText()).includes("0.2 ETH"), "the amount, decoded");
    out.axe_review = await accessible(page, "review");
    await shot(page, "analyst-review");
    await page.getByRole("button", { name: "Assign to me" }).click();
    await page.locator("#review").getByText(env("EMAIL_SHOWN")).waitFor();
    await page.getByLabel(/^Note/).fill("called the customer: it is theirs");
    await page.getByRole("button", { name: "Add note" }).click();
    await page.locator("#notes li").first().waitFor();
    out.notes = await page.locator("#notes").innerText();
    check(out.notes.includes("called the customer"), `notes: ${out.notes}`);
    await page.getByRole("button", { name: "Release" }).click();
    await page.locator("#review").getByText(/^released/).waitFor();

    await page.goto("about:blank");
    await page.goto(`${base}/console/#/reviews/${second}`);
    await page.getByLabel(/^Note/).fill("the customer did not ask for this");
    await page.getByRole("button", { name: "Reject" }).click();
    await page.locator("#review").getByText(/^rejected/).waitFor();
    check(!(await page.getByRole("button", { name: "Release" }).count()), "decided: no more actions");
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/analyst.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** RFC 6238 (SHA-1, 30 s, 6 digits) from a base32 secret, as an authenticator app makes it. */
function totp(secret, at = Date.now()) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

/** A customer on their own pages: withdrawals, the anti-phishing code on every page,
 * two-factor codes with recovery codes, devices, the whitelist and whitelist-only mode. */
async function customer() {
  const { browser, page, violations } = await launch();
  const out = {};
  try {
    await signIn(page);
    await page.locator("#mine").waitFor();
    out.mine = await page.locator("#mine").innerText();
    check(out.mine.includes("0.05 ETH") && out.mine.includes("paid") && out.mine.includes(env("TXID")), `my withdrawals: ${out.mine}`);
    check(!(await page.locator("#lock").count()), "no lock before any security change");
    check(await page.locator("#anti-phishing").isHidden(), "no anti-phishing code yet");
    out.axe_mine = await accessible(page, "my withdrawals");

    await page.getByRole("link", { name: "Security" }).click();
    await page.getByLabel(/^Your code/).fill("green-lynx-7");
    await page.getByRole("button", { name: "Save code" }).click();
    await page.locator("#anti-phishing").getByText("green-lynx-7").waitFor();
    // The banner changes first; the security page is then drawn again (its code field now
    // holds the saved code): act only on the new page.
    await page.locator('#anti-phishing-code[value="green-lynx-7"]').waitFor();

    await page.getByRole("button", { name: "Turn on two-factor codes" }).click();
    const secret = await page.locator("#totp-secret").innerText();
    await page.getByLabel("Code from the app").fill(totp(secret));
    await page.getByRole("button", { name: "Confirm" }).click();
    await page.locator("#recovery-codes li").first().waitFor();
    out.recovery_codes = await page.locator("#recovery-codes li").count();
    check(out.recovery_codes === 10, `ten recovery codes: ${out.recovery_codes}`);
    out.axe_security = await accessible(page, "customer security");
    await shot(page, "customer-security");

    await page.goto("about:blank");
    await page.goto(`${base}/console/#/security`);
    await page.locator("#devices li").first().waitFor();
    check((await page.locator("#devices li").count()) === 2, "two devices");
    await page.getByRole("button", { name: "Revoke old phone" }).click();
    await page.locator("#devices li").nth(1).waitFor({ state: "detached" });
    out.devices = await page.locator("#devices").innerText();
    check(!out.devices.includes("old phone"), `revoked: ${out.devices}`);

    await page.getByLabel("Address").fill(env("DESTINATION"));
    await page.getByLabel("Label").fill("my hardware wallet");
    await page.getByRole("button", { name: "Add to whitelist" }).click();
    await page.locator("#whitelist li").first().waitFor();
    out.whitelist = await page.locator("#whitelist").innerText();
    check(out.whitelist.includes("my hardware wallet") && /usable from .* \(in (2[34] h|\d+ min)\)/.test(out.whitelist), `whitelist and its countdown: ${out.whitelist}`);
    await page.getByRole("button", { name: "Turn on whitelist-only mode" }).click();
    await page.locator("#whitelist-mode").getByText(/only whitelisted addresses/).waitFor();

    await page.getByRole("link", { name: "My withdrawals" }).click();
    await page.locator("#lock").waitFor();
    out.lock = await page.locator("#lock").innerText();
    check(out.lock.includes("locked until"), `lock: ${out.lock}`);
    check(await page.locator("#whitelist-only").isVisible(), "whitelist-only mode shown");
    check((await page.locator("#anti-phishing").innerText()).includes("green-lynx-7"), "the code on every page");
    await shot(page, "customer-withdrawals");

    // Signing in again now needs the second factor. Wait for the sign-in form first: it
    // shows once the logout request has ended, and navigating sooner could cut that request
    // short and leave the session alive (seen once in CI under load).
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("E-mail").waitFor();
    await signIn(page);
    await page.getByRole("alert").waitFor();
    out.needs_code = await page.getByRole("alert").innerText();
    await page.goto("about:blank");
    await signIn(page, totp(secret, Date.now() + 30_000));
    await page.locator("#mine").waitFor();
    check((await page.locator("#anti-phishing").innerText()).includes("green-lynx-7"), "the code after signing in again");
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/customer.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** An operator's dashboard: the checks, the withdrawals waiting by state, the queues and who
 * leads each job. */
async function dashboard() {
  const { browser, page, violations } = await launch();
  const out = {};
  try {
    await signIn(page);
    await page.locator("#checks").waitFor();
    out.checks = await page.locator("#checks tbody").innerText();
    check(/database\tok/.test(out.checks) && /signers\tok/.test(out.checks), `checks: ${out.checks}`);
    out.refills = await page.locator("#refills").innerText();
    check(out.refills.includes("No refill from cold is asked for."), `refills: ${out.refills}`);
    out.backlog = await page.locator("#backlog").innerText();
    check(/reserved\t2\t/.test(out.backlog), `backlog: ${out.backlog}`);
    out.queues = await page.locator("#queues").innerText();
    check(out.queues.includes("Risk reviews waiting\n2"), `queues: ${out.queues}`);
    out.leaders = await page.locator("#leaders tbody").innerText();
    check(out.leaders.includes("leader/risk") && out.leaders.includes("yes"), `leaders: ${out.leaders}`);
    out.axe_dashboard = await accessible(page, "dashboard");
    await shot(page, "operator-dashboard");

    // The customer, by the exchange's id: balances, withdrawals, the ledger.
    await page.getByRole("link", { name: "Customers" }).click();
    await page.getByLabel("The exchange's customer id").fill(env("CUSTOMER"));
    await page.getByRole("button", { name: "Find" }).click();
    await page.locator("#customer-withdrawals").waitFor();
    check((await page.locator("#customer-withdrawals tbody tr").count()) === 2, "the customer's two withdrawals");
    out.ledger = await page.locator("#ledger tbody").innerText();
    check(out.ledger.includes("+2000000000000000000 ETH") && out.ledger.includes("withdrawal_reserve"), `ledger: ${out.ledger}`);
    out.axe_customers = await accessible(page, "customers");
    await shot(page, "operator-customer");

    // The audit log verifies.
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.locator("#verdict").waitFor();
    out.verdict = await page.locator("#verdict").innerText();
    check(out.verdict.startsWith("Intact"), `verdict: ${out.verdict}`);
    check((await page.locator("#records tbody tr").count()) > 5, "the latest records");
    out.axe_audit = await accessible(page, "audit");
    await shot(page, "auditor-audit-log");
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/dashboard.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** A security officer (a staff admin linked to governance member `sec`) makes a passkey for
 * governance on the security page: its governance key and the credential for later phases. */
async function officerEnrol() {
  const { browser, page, cdp, authenticatorId, violations } = await launch();
  const out = {};
  try {
    await signIn(page);
    await page.getByRole("link", { name: "Governance" }).click();
    await page.locator("#head").waitFor();
    // A page still loading when the user goes elsewhere is not drawn over where they went:
    // the dashboard's data arrives 1.5 s late, after the security page was drawn.
    await page.route(`${base}/v1/ops/summary`, async (route) => {
      await new Promise((done) => setTimeout(done, 1500));
      await route.continue();
    });
    await page.getByRole("link", { name: "Dashboard" }).click();
    await page.getByRole("link", { name: "Security" }).click();
    await page.getByRole("button", { name: "Add a passkey" }).waitFor();
    await page.waitForTimeout(2500);
    out.title_after_late_page = await page.title();
    check(out.title_after_late_page.startsWith("Security"), `a late page drew over this one: ${out.title_after_late_page}`);
    await page.unroute(`${base}/v1/ops/summary`);
    Object.assign(out, await governancePasskey(page, cdp, authenticatorId));
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/officer-enrol.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** The officer, signed in with the passkey the log registers for them, freezes ETH from the
 * page: proposes the time-boxed freeze and signs it with the passkey. A lying server (entry
 * bytes that do not hash to the hash it claims) is caught first, and the passkey signs
 * nothing for it. */
async function officerFreeze() {
  const { browser, page, cdp, authenticatorId, violations } = await launch();
  const out = {};
  try {
    await cdp.send("WebAuthn.addCredential", { authenticatorId, credential: JSON.parse(env("CREDENTIAL")) });
    const signCount = async () => (await cdp.send("WebAuthn.getCredentials", { authenticatorId })).credentials[0].signCount;
    await page.goto(`${base}/`);
    await page.getByLabel("E-mail").fill(env("EMAIL"));
    await page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await page.getByRole("link", { name: "Governance" }).click();
    await page.locator("#head").waitFor();
    await page.getByLabel("What").selectOption("asset");
    await page.getByLabel(/^Asset or wallet/).fill("ETH");
    await page.getByLabel(/^For how many minutes/).fill("60");
    await page.getByLabel(/^Why/).fill("withdrawals to an address we do not know, drill");
    await page.getByRole("button", { name: "Propose the freeze" }).click();
    await page.locator("#diff").waitFor();
    out.diff = await page.locator("#diff").innerText();
    check(out.diff.includes("freezes asset ETH until") && out.diff.includes("drill"), `freeze: ${out.diff}`);
    out.axe_proposal = await accessible(page, "governance with a proposal");
    await shot(page, "officer-governance-freeze");

    // A lying server shows the freeze but hands over the bytes of a global freeze under the
    // freeze's hash: the page hashes the bytes, refuses, and offers nothing to sign.
    const before = await signCount();
    await page.route(`${base}/v1/governance`, async (route) => {
      const r = await route.fetch();
      const json = await r.json();
      const entry = JSON.parse(Buffer.from(json.proposal.signed, "base64url").toString("utf8"));
      entry.change = { change: "freeze", scope: { kind: "global" } };
      json.proposal.signed = Buffer.from(JSON.stringify(entry)).toString("base64url");
      await route.fulfill({ response: r, json });
    });
    await page.goto("about:blank");
    await page.goto(`${base}/console/#/governance`);
    await page.locator("#proposal").waitFor();
    out.lie = await page.locator("#proposal").innerText();
    check(out.lie.includes("do not hash to the hash the server claims"), `lie: ${out.lie}`);
    check(!(await page.locator("#sign-proposal").count()), "nothing to sign on a lie");
    check((await signCount()) === before, "the passkey signed nothing");
    await page.unroute(`${base}/v1/governance`);

    // The honest proposal: signed with the passkey, committed by the officer alone.
    await page.goto("about:blank");
    await page.goto(`${base}/console/#/governance`);
    await page.getByRole("button", { name: "Sign as sec with my passkey" }).click();
    await page.getByText(/is committed/).waitFor();
    check((await signCount()) > before, "the passkey signed the entry");
    out.freezes = await page.locator("#freezes").innerText();
    check(out.freezes.includes("asset ETH until") && out.freezes.includes("drill"), `freezes: ${out.freezes}`);
    out.log = await page.locator("#log tbody").innerText();
    check(out.log.includes("sec (passkey)"), `log: ${out.log}`);
    await shot(page, "officer-governance-frozen");
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/officer-freeze.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** Governance, as an admin sees it: a pending policy change shown as a diff against the live
 * policy ("review"), or a whitelist address proposed from the page ("whitelist"). */
async function governance(mode) {
  const { browser, page, violations } = await launch();
  const out = {};
  try {
    await signIn(page);
    await page.getByRole("link", { name: "Governance" }).click();
    await page.locator("#head").waitFor();
    if (mode === "review") {
      out.diff = await page.locator("#diff").innerText();
      check(out.diff.includes("policy version 1 → 2"), `diff: ${out.diff}`);
      check(out.diff.includes('changes rule small-eth: when.max_amount "100000000000000000" → "200000000000000000"'), `diff: ${out.diff}`);
      check(!out.diff.includes("large-eth"), `unchanged rules are not listed: ${out.diff}`);
      out.proposal = await page.locator("#proposal").innerText();
      out.nodes = await page.locator("#nodes").innerText();
      for (const n of [1, 2, 3]) check(out.nodes.includes(`node ${n} at entry 3 (`), `the nodes' heads: ${out.nodes}`);
      out.members = await page.locator("#members tbody tr").count();
      out.log = await page.locator("#log tbody").innerText();
      check(!(await page.locator("#freeze-form").count()), "no second proposal while one waits");
      out.axe_governance = await accessible(page, "governance");
      await shot(page, "admin-governance-diff");
    } else if (mode === "whitelist") {
      await page.locator("#whitelist-form").getByLabel("Chain (CAIP-2)").fill("eip155:31337");
      await page.locator("#whitelist-form").getByLabel("Address").fill(env("COLD"));
      await page.locator("#whitelist-form").getByLabel("Label").fill("cold-2");
      await page.getByRole("button", { name: "Propose the address" }).click();
      await page.locator("#diff").waitFor();
      out.diff = await page.locator("#diff").innerText();
      check(out.diff.includes(`whitelists cold-2 ${env("COLD")} for our own wallets on eip155:31337`), `whitelist: ${out.diff}`);
      out.axe_proposal = await accessible(page, "governance with a proposal");
    } else if (mode === "asset") {
      // A policy that is not JSON is refused in the page, and nothing is proposed.
      await page.getByLabel(/^The policy in force/).fill("{ not json");
      await page.getByRole("button", { name: "Propose the policy" }).click();
      await page.getByRole("alert").waitFor();
      out.bad_policy = await page.getByRole("alert").innerText();
      check(out.bad_policy.includes("not JSON"), `bad policy: ${out.bad_policy}`);
      check((await page.locator("#proposal").innerText()) === "Nothing.", "nothing proposed");
      await page.locator("#asset-form").getByLabel("Chain (CAIP-2)").fill("eip155:31337");
      await page.getByLabel("Symbol").fill("USDC");
      await page.getByLabel("Decimals").fill("6");
      await page.getByLabel(/^Token contract/).fill(env("TOKEN"));
      await page.getByRole("button", { name: "Propose the asset" }).click();
      await page.locator("#diff").waitFor();
      out.diff = await page.locator("#diff").innerText();
      check(out.diff.includes('registers {"chain":"eip155:31337","symbol":"USDC","decimals":6,"contract":'), `asset: ${out.diff}`);
    } else {
      throw new Error(`unknown governance mode ${mode}`);
    }
    check(violations.length === 0, `CSP violations or page errors: ${violations.join(" | ")}`);
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/governance-${mode}.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
  return out;
}

/** After a row was edited behind Strongroom's back: the audit page says where. */
async function auditBroken() {
  const { browser, page } = await launch();
  try {
    await signIn(page);
    await page.getByRole("link", { name: "Audit log" }).click();
    await page.locator("#verdict").waitFor();
    const verdict = await page.locator("#verdict").innerText();
    check(verdict.includes("does not verify") && verdict.includes(`${env("EDITED")}: edited`), `verdict: ${verdict}`);
    await shot(page, "auditor-audit-log-broken");
    return { verdict };
  } catch (e) {
    await page.screenshot({ path: `${env("WORK")}/audit-broken.png` }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

const phases = {
  "audit-broken": auditBroken,
  "check-and-enrol": check_and_enrol,
  approve,
  analyst,
  customer,
  dashboard,
  "governance-review": () => governance("review"),
  "officer-enrol": officerEnrol,
  "officer-freeze": officerFreeze,
  "governance-whitelist": () => governance("whitelist"),
  "governance-asset": () => governance("asset"),
};
if (!phases[phase]) throw new Error(`unknown phase ${phase}`);
const result = await phases[phase]();
writeFileSync(1, JSON.stringify(result) + "\n");
