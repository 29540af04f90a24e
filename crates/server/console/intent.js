// Strongroom withdrawal intents, decoded and hashed in the browser.
//
// An approver must see what their passkey signs, not what the server says it signs. This module
// decodes the canonical intent encoding (docs/adr/0002-intent-encoding.md), refuses anything the
// Rust decoder refuses (with the same messages), recomputes the intent hash and the approval
// message the passkey signs (the WebAuthn challenge), all from bytes, with WebCrypto's SHA-256
// and the Keccak-256 below (for EIP-55 address checksums). It is checked against the published
// vectors (crates/core/tests/vectors/intent-v1.json) in a real browser by the console tests.

export const INTENT_VERSION = 1;
export const INTENT_TAG = "strongroom/intent/v1";
export const APPROVAL_TAG = "strongroom/approval/v1";
const MAX_FIELD_LEN = 256;
const MAX_DECIMALS = 38;
const BITCOIN = {
  "bip122:000000000019d6689c085ae165831e93": "bc",
  "bip122:000000000933ea01ad0ee984209779ba": "tb",
  "bip122:0f9188f13cb7b2c71f2a335e3a4fc328": "bcrt",
};

/** A refused encoding; `message` matches the Rust decoder's. */
export class IntentError extends Error {}

export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new IntentError("not hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

/** BIP-340's tagged hash: SHA-256(SHA-256(tag) || SHA-256(tag) || data). */
export async function taggedHash(tag, data) {
  const t = await sha256(new TextEncoder().encode(tag));
  return sha256(concat(t, t, data));
}

/** The intent hash (hex) of an encoding, as approvers and the signer nodes compute it. */
export async function intentHash(encoding) {
  return bytesToHex(await taggedHash(INTENT_TAG, encoding));
}

function u64be(v) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, BigInt(v)));
  return out;
}

/** The 32 bytes an approval signs: tagged_hash(APPROVAL_TAG, intent hash || version || expiry). */
export async function approvalMessage(intentHashHex, policyVersion, expiresAtMs) {
  const h = hexToBytes(intentHashHex);
  if (h.length !== 32) throw new IntentError("an intent hash is 32 bytes");
  return taggedHash(APPROVAL_TAG, concat(h, u64be(policyVersion), u64be(expiresAtMs)));
}

/** The tag of a governance entry's hash (governance::log::ENTRY_TAG). */
export const ENTRY_TAG = "strongroom/governance/entry/v1";

/**
 * A governance proposal as members sign it: `signedB64` (base64url) is the exact JSON the
 * entry hash covers. Returns the entry read from those bytes and its hash computed here, or
 * throws if the bytes do not hash to `claimedHex` (what the server says members sign).
 */
export async function readEntry(signedB64, claimedHex) {
  const bytes = fromBase64url(signedB64);
  const hash = await taggedHash(ENTRY_TAG, bytes);
  if (bytesToHex(hash) !== String(claimedHex).toLowerCase()) {
    throw new IntentError("the proposal's bytes do not hash to the hash the server claims; refused");
  }
  const entry = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  if (!entry || typeof entry !== "object" || !entry.change || typeof entry.change.change !== "string") {
    throw new IntentError("the proposal's bytes are not a governance entry");
  }
  return { entry, hash };
}

export function base64url(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(text) {
  const s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** Base units as a decimal string with the asset's decimals ("1500000", 6 -> "1.5"). */
export function formatUnits(baseUnits, decimals) {
  const v = BigInt(baseUnits);
  if (decimals === 0) return v.toString();
  const s = v.toString().padStart(decimals + 1, "0");
  const whole = s.slice(0, s.length - decimals);
  const frac = s.slice(s.length - decimals).replace(/0+$/, "");
  return frac ? `${whole}.${frac}` : whole;
}

// ---------- Keccak-256 (for EIP-55 checksums) ----------

const MASK = (1n << 64n) - 1n;
const RC = [
  0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n,
  0x000000000000808bn, 0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n,
  0x000000000000008an, 0x0000000000000088n, 0x0000000080008009n, 0x000000008000000an,
  0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n, 0x8000000000008003n,
  0x8000000000008002n, 0x8000000000000080n, 0x000000000000800an, 0x800000008000000an,
  0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
];
// Rotation of lane x + 5y.
const ROT = [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14];

function rotl(v, n) {
  if (n === 0) return v;
  const b = BigInt(n);
  return ((v << b) | (v >> (64n - b))) & MASK;
}

function keccakF(a) {
  const c = new Array(5);
  const b = new Array(25);
  for (let round = 0; round < 24; round++) {
    for (let x = 0; x < 5; x++) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
    for (let x = 0; x < 5; x++) {
      const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
      for (let y = 0; y < 25; y += 5) a[x + y] ^= d;
    }
    for (let x = 0; x < 5; x++) {
      for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], ROT[x + 5 * y]);
    }
    for (let y = 0; y < 25; y += 5) {
      for (let x = 0; x < 5; x++) a[x + y] = b[x + y] ^ (~b[((x + 1) % 5) + y] & MASK & b[((x + 2) % 5) + y]);
    }
    a[0] ^= RC[round];
  }
}

/** Keccak-256 (Ethereum's, with the original 0x01 padding, not SHA3-256's). */
export function keccak256(data) {
  const rate = 136;
  const padded = new Uint8Array((Math.floor(data.length / rate) + 1) * rate);
  padded.set(data);
  padded[data.length] ^= 0x01;
  padded[padded.length - 1] ^= 0x80;
  const a = new Array(25).fill(0n);
  for (let off = 0; off < padded.length; off += rate) {
    for (let i = 0; i < rate / 8; i++) {
      let lane = 0n;
      for (let k = 7; k >= 0; k--) lane = (lane << 8n) | BigInt(padded[off + 8 * i + k]);
      a[i] ^= lane;
    }
    keccakF(a);
  }
  const out = new Uint8Array(32);
  for (let i = 0; i < 4; i++) {
    for (let k = 0; k < 8; k++) out[8 * i + k] = Number((a[i] >> BigInt(8 * k)) & 0xffn);
  }
  return out;
}

/** EIP-55: the checksummed form of a 0x-prefixed address. */
export function eip55(address) {
  const lower = address.slice(2).toLowerCase();
  const hash = bytesToHex(keccak256(new TextEncoder().encode(lower)));
  let out = "0x";
  for (let i = 0; i < 40; i++) {
    out += parseInt(hash[i], 16) >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out;
}

// ---------- bech32 / bech32m (BIP-173, BIP-350) ----------

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32M = 0x2bc830a3;

function polymod(values) {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ v) >>> 0;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ gen[i]) >>> 0;
  }
  return chk;
}

/** A lower-case segwit address on `hrp`'s network, checksum and program checked. */
function isSegwit(text, hrp) {
  if (text.length > 90 || text !== text.toLowerCase()) return false;
  const sep = text.lastIndexOf("1");
  if (sep < 1 || text.slice(0, sep) !== hrp || text.length - sep - 1 < 7) return false;
  const data = [];
  for (const ch of text.slice(sep + 1)) {
    const v = CHARSET.indexOf(ch);
    if (v < 0) return false;
    data.push(v);
  }
  const expanded = [...hrp].map((c) => c.charCodeAt(0) >> 5);
  expanded.push(0, ...[...hrp].map((c) => c.charCodeAt(0) & 31));
  const check = polymod(expanded.concat(data));
  const version = data[0];
  if (version > 16 || check !== (version === 0 ? 1 : BECH32M)) return false;
  let acc = 0;
  let bits = 0;
  const program = [];
  for (const v of data.slice(1, -6)) {
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      program.push((acc >> bits) & 0xff);
    }
  }
  if (bits >= 5 || (acc & ((1 << bits) - 1)) !== 0) return false;
  if (program.length < 2 || program.length > 40) return false;
  return version !== 0 || program.length === 20 || program.length === 32;
}

// ---------- the decoder ----------

function invalid(field, reason) {
  return new IntentError(`intent field ${field} is invalid: ${reason}`);
}

function validChain(chain) {
  const sep = chain.indexOf(":");
  if (sep < 0) return false;
  const [ns, reference] = [chain.slice(0, sep), chain.slice(sep + 1)];
  if (ns === "eip155") {
    return /^[1-9][0-9]{0,19}$/.test(reference) && BigInt(reference) <= 0xffffffffffffffffn;
  }
  return ns === "bip122" && chain in BITCOIN;
}

function canonicalAddress(chain, text, field) {
  if (chain.startsWith("eip155:")) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(text)) throw invalid(field, "not an Ethereum address: expected 0x followed by 40 hex digits");
    const lower = text.slice(2);
    if (/[a-f]/.test(lower) && /[A-F]/.test(lower) && eip55(text) !== text) {
      throw invalid(field, "Ethereum address checksum (EIP-55) does not match: check for a typo");
    }
    if (eip55(text) !== text) throw invalid(field, "address is not in canonical form");
  } else {
    const hrp = BITCOIN[chain];
    if (!isSegwit(text.toLowerCase(), hrp)) throw invalid(field, `not a Bitcoin SegWit address on ${hrp}`);
    if (text !== text.toLowerCase()) throw invalid(field, "address is not in canonical form");
  }
  return text;
}

/**
 * Decode a canonical version-1 intent. Returns
 * `{chain, asset: {symbol, decimals, contract}, source_wallet, destination, amount, fee_cap,
 * expires_at_ms, request_id}` with amounts as decimal strings of base units.
 */
export function decodeIntent(bytes) {
  let pos = 0;
  const take = (n) => {
    if (pos + n > bytes.length) throw new IntentError("intent encoding is truncated");
    const s = bytes.subarray(pos, pos + n);
    pos += n;
    return s;
  };
  const u8 = () => take(1)[0];
  const str = (field) => {
    const len = (u8() << 8) | u8();
    if (len > MAX_FIELD_LEN) throw new IntentError(`intent field ${field} is longer than ${MAX_FIELD_LEN} bytes`);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(take(len));
    } catch (e) {
      if (e instanceof IntentError) throw e;
      throw invalid(field, "not UTF-8");
    }
  };
  const big = (n) => take(n).reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);

  const version = u8();
  if (version !== INTENT_VERSION) {
    throw new IntentError(`intent version ${version} is not supported (this build reads version ${INTENT_VERSION})`);
  }
  const chain = str("chain");
  if (!validChain(chain)) throw invalid("chain", "unknown chain");
  const symbol = str("asset.symbol");
  if (!/^[A-Z0-9]{1,16}$/.test(symbol)) throw invalid("asset.symbol", "bad symbol");
  const decimals = u8();
  if (decimals > MAX_DECIMALS) throw invalid("asset.decimals", `${decimals} is too many`);
  const contractText = str("asset.contract");
  const contract = contractText === "" ? null : canonicalAddress(chain, contractText, "asset.contract");
  const wallet = str("source_wallet");
  if (!/^[a-z0-9-]{1,64}$/.test(wallet)) {
    throw new IntentError("wallet id must be 1-64 lower-case letters, digits or dashes");
  }
  const destination = canonicalAddress(chain, str("destination"), "destination");
  const amount = big(16);
  const feeCap = big(16);
  const expires = BigInt.asIntN(64, big(8));
  const id = bytesToHex(take(16));
  if (pos !== bytes.length) {
    throw new IntentError(`intent encoding has ${bytes.length - pos} bytes after its last field`);
  }
  const maxAmount = 10n ** 38n - 1n;
  if (amount > maxAmount) throw invalid("amount", "above the largest amount");
  if (feeCap > maxAmount) throw invalid("fee_cap", "above the largest amount");
  return {
    chain,
    asset: { symbol, decimals, contract },
    source_wallet: wallet,
    destination,
    amount: amount.toString(),
    fee_cap: feeCap.toString(),
    expires_at_ms: Number(expires),
    request_id: `${id.slice(0, 8)}-${id.slice(8, 12)}-${id.slice(12, 16)}-${id.slice(16, 20)}-${id.slice(20)}`,
  };
}

/**
 * Check what the server says about a withdrawal against its intent bytes: returns the decoded
 * intent, the hash computed here, and every field where the server's view disagrees.
 */
export async function verifyWithdrawal(w) {
  const bytes = hexToBytes(w.intent);
  const intent = decodeIntent(bytes);
  const hash = await intentHash(bytes);
  const mismatches = [];
  const expect = (field, ours, theirs) => {
    if (String(ours) !== String(theirs)) mismatches.push({ field, ours: String(ours), theirs: String(theirs) });
  };
  expect("intent_hash", hash, w.intent_hash);
  expect("id", intent.request_id, w.id);
  expect("chain", intent.chain, w.chain);
  expect("asset", intent.asset.symbol, w.asset);
  expect("source_wallet", intent.source_wallet, w.source_wallet);
  expect("destination", intent.destination, w.destination);
  expect("amount", intent.amount, w.amount);
  expect("fee_cap", intent.fee_cap, w.fee_cap);
  expect("expires_at_ms", intent.expires_at_ms, w.expires_at_ms);
  return { intent, hash, mismatches };
}
