// A keyward guest in JavaScript: a Lambda handler that runs sandboxed, and reaches its secret only through the host.
import { decrypt } from 'keyward:lambda/kms@0.1.0';
import { getEnvironment } from 'wasi:cli/environment@0.2.3';

/** Decrypts the base64 KMS ciphertext in env var `variable`; throws the function error on failure. */
function secretFromEnv(variable) {
  const encoded = new Map(getEnvironment()).get(variable);
  if (encoded === undefined) throw `env var ${variable} is not set`;
  let ciphertext;
  try {
    ciphertext = decodeBase64(encoded); // from keyward.js: keyward's base64 policy, as the Rust SDK reads it
  } catch (e) {
    throw `env var ${variable} is not base64: ${e}`;
  }
  try {
    return decrypt(ciphertext, []);
  } catch (e) {
    throw kmsErrorMessage(e); // from keyward.js: `kms <kind>: <message>`, as the Rust SDK words it
  }
}

export const handler = {
  // `event` is the Lambda event JSON; return the response JSON, or throw a string for a function error.
  handle(event, ctx) {
    const request = JSON.parse(event);
    const password = secretFromEnv('PASSWORD');
    const body = JSON.stringify({ path: request.rawPath ?? '', request_id: ctx.requestId, secret_bytes: password.length });
    password.fill(0);
    return JSON.stringify({ statusCode: 200, headers: { 'content-type': 'application/json' }, body });
  },
};
