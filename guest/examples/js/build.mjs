// Builds the JavaScript examples next to the Rust guests (target/wasm32-wasip2/release/): hello-js.wasm,
// signer-js.wasm and api-client-js.wasm. Run by `cargo xtask build-guests`.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, readFile, writeFile } from 'node:fs/promises';

const here = new URL('.', import.meta.url).pathname;
const outDir = `${here}../../../target/wasm32-wasip2/release/`;
await mkdir(outDir, { recursive: true });
// keyward's guest rules for JavaScript (guest/js/keyward.js) go in front of each guest.
const rules = await readFile(`${here}../../js/keyward.js`, 'utf8');
// A pure component: no WASI but what the world imports, and for `fetch`, wasi:http (with the clocks its timers use).
const pure = ['random', 'stdio', 'clocks', 'http', 'fetch-event'];
for (const [name, file, worldName, disableFeatures] of [
  ['hello-js', 'hello.js', 'secret-handler-js', pure],
  // The signer never decrypts: its world imports key handles only, so it runs on a host that denies plaintext.
  ['signer-js', 'signer.js', 'sealed-handler-js', pure],
  // The api-client asks for no secret at all: the host injects its key into the requests `fetch` sends.
  ['api-client-js', 'api-client.js', 'sealed-handler-js', ['random', 'stdio', 'fetch-event']],
]) {
  const source = rules + (await readFile(`${here}${file}`, 'utf8'));
  const { component } = await componentize(source, {
    sourceName: file,
    witPath: `${here}wit`,
    worldName,
    disableFeatures,
  });
  await writeFile(`${outDir}${name}.wasm`, component);
  console.log(`wrote ${name}.wasm (${component.length} bytes)`);
}
