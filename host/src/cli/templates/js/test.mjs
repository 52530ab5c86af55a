// Builds the component, then runs it in the keyward host with a throwaway local key (no AWS).
// The host binary: $KEYWARD, or `keyward` on PATH.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';

const keyward = process.env.KEYWARD ?? 'keyward';
const run = (...args) => execFileSync(keyward, args, { encoding: 'utf8' });

test('answers a function URL request with the secret decrypted by the host', () => {
  execFileSync('node', ['build.mjs'], { stdio: 'inherit' });
  rmSync('keyward-test', { recursive: true, force: true });
  mkdirSync('keyward-test');
  run('keygen', '--out', 'keyward-test/local.key');
  const ciphertext = run('encrypt', '--key', 'keyward-test/local.key', '--context', 'function={name}', '--plaintext', 'hunter2').trim();
  writeFileSync('keyward-test/event.json', JSON.stringify({ rawPath: '/hello' }));
  const response = JSON.parse(run('invoke', '{name}.wasm', '--key', 'keyward-test/local.key', '--env', `PASSWORD=${ciphertext}`,
    '--context', 'function={name}', '--event', 'keyward-test/event.json'));
  assert.equal(response.statusCode, 200);
  const body = JSON.parse(response.body);
  assert.equal(body.path, '/hello');
  assert.equal(body.secret_bytes, 7);
  rmSync('keyward-test', { recursive: true, force: true });
});
