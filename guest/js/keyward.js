// keyward's guest rules for JavaScript, the one copy JavaScript guests carry (their builds put this file in front of
// the handler, since a componentize-js component is one script). Each rule is written once for Rust, in the guest
// SDK, and the test suite runs a Rust and a JavaScript guest on the same cases, so the two cannot drift.

// The base64 policy (guest/base64/src/lib.rs): ASCII whitespace and a leading byte-order mark are ignored, the
// standard and URL-safe alphabets are both read, padding is optional; anything else is refused, naming its byte
// offset, in the same words as the Rust SDK.
function decodeBase64(text) {
  const bytes = new TextEncoder().encode(text.startsWith('\ufeff') ? text.slice(1) : text);
  const symbols = [];
  let padding = 0;
  let lastPadding = 0;
  let lastOffset = 0;
  for (let offset = 0; offset < bytes.length; offset++) {
    const b = bytes[offset];
    if (b === 32 || (b >= 9 && b <= 13)) continue;
    if (b === 61) {
      padding++;
      if (padding > 2 || symbols.length === 0) throw `misplaced '=' at offset ${offset}`;
      lastPadding = offset;
      continue;
    }
    if (padding > 0) throw `misplaced '=' at offset ${lastPadding}`;
    const value = b >= 65 && b <= 90 ? b - 65 : b >= 97 && b <= 122 ? b - 71 : b >= 48 && b <= 57 ? b + 4
      : b === 43 || b === 45 ? 62 : b === 47 || b === 95 ? 63 : -1;
    if (value < 0) {
      if (b > 32 && b < 127) throw `invalid character '${String.fromCharCode(b)}' at offset ${offset}`;
      if (b < 128) throw `invalid byte 0x${b.toString(16).padStart(2, '0')} at offset ${offset}`;
      throw `invalid non-ASCII byte at offset ${offset}`;
    }
    symbols.push(value);
    lastOffset = offset;
  }
  if (symbols.length % 4 === 1) {
    throw `a single character at offset ${lastOffset} ends the value, which cannot encode a byte`;
  }
  const out = new Uint8Array(Math.floor((symbols.length * 3) / 4));
  let o = 0;
  for (let i = 0; i < symbols.length; i += 4) {
    const n = (symbols[i] << 18) | (symbols[i + 1] << 12) | ((symbols[i + 2] ?? 0) << 6) | (symbols[i + 3] ?? 0);
    out[o++] = n >> 16;
    if (i + 2 < symbols.length) out[o++] = (n >> 8) & 255;
    if (i + 3 < symbols.length) out[o++] = n & 255;
  }
  return out;
}

// A `kms.decrypt` failure as the function error's text: `kms <kind>: <message>` (the guest SDK's `KmsError`).
// `e` is what componentize-js throws for a WIT `result` error: a `ComponentError` whose `payload` is the
// `{ tag, val }` variant (older versions throw the variant itself).
function kmsErrorMessage(e) {
  const err = e.payload ?? e;
  return `kms ${err.tag}: ${err.val}`;
}

// A `keys` failure (opening a key handle, or an operation on one) as the function error's text:
// `key <kind>: <message>` (the guest SDK's `KeyError`). `e` as for `kmsErrorMessage`.
function keyErrorMessage(e) {
  const err = e.payload ?? e;
  return `key ${err.tag}: ${err.val}`;
}

// The secret named `name`, wherever the host keeps it (the Rust SDK's `secret`, and `secret_from_env`): a guest env
// var's ciphertext, or a secret the host fetches from Secrets Manager or SSM. `kms` is the guest's own import of
// `keyward:lambda/kms` (these rules import nothing, so that a guest of the sealed world carries none of it). A
// refusal is thrown as `kmsErrorMessage` words it.
function secret(kms, name) {
  try {
    return kms.secret(name);
  } catch (e) {
    throw kmsErrorMessage(e);
  }
}
