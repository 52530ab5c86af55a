// The signer in JavaScript: same WIT, same answers as guest/examples/signer. Its ed25519 key arrives as a KMS
// ciphertext in SIGNING_KEY and stays in the host; the guest holds a handle, and the host signs each request body.
// build.mjs puts keyward's guest rules (guest/js/keyward.js: `decodeBase64`, `keyErrorMessage`) in front of it.
import { Key } from 'keyward:lambda/keys@0.1.0';

/** Standard base64 with padding, as the Rust SDK's examples write it. */
function encodeBase64(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export const handler = {
  handle(event, _ctx) {
    const request = JSON.parse(event);
    let body;
    try {
      body = request.isBase64Encoded ? decodeBase64(request.body ?? '') : new TextEncoder().encode(request.body ?? '');
    } catch (e) {
      throw `the body is not base64: ${e}`;
    }
    let key, signature, publicKey;
    try {
      key = Key.openEnv('SIGNING_KEY');
    } catch (e) {
      throw keyErrorMessage(e);
    }
    try {
      signature = key.sign('ed25519', body);
      publicKey = key.publicKey();
    } catch (e) {
      const err = e.payload ?? e;
      if (err.tag === 'unsupported') throw `SIGNING_KEY is not an ed25519 private key: ${err.val}`;
      throw keyErrorMessage(e);
    } finally {
      key[Symbol.dispose]?.();
    }
    const json = JSON.stringify({ algorithm: 'ed25519', public_key: encodeBase64(publicKey), signature: encodeBase64(signature) });
    return JSON.stringify({
      statusCode: 200, headers: { 'content-type': 'application/json' }, body: json, cookies: [], isBase64Encoded: false,
    });
  },
};
