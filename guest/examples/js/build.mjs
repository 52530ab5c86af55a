// Builds the JavaScript examples next to the Rust guests (target/wasm32-wasip2/release/): hello-js.wasm and
// signer-js.wasm. Run by `cargo xtask build-guests`.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, readFile, writeFile } from 'node:fs/promises';

const here = new URL('.', import.meta.url).pathname;
const outDir = `${here}../../../target/wasm32-wasip2/release/`;
await mkdir(outDir, { recursive: true });
// keyward's guest rules for JavaScript (guest/js/keyward.js) go in front of each guest.
const rules = await readFile(`${here}../../js/keyward.js`, 'utf8');
for (const [name, file, worldName] of [
  ['hello-js', 'hello.js', 'secret-handler-js'],
  // The signer never decrypts: its world imports key handles only, so it runs on a host that denies plaintext.
  ['signer-js', 'signer.js', 'sealed-handler-js'],
]) {
  const source = rules + (await readFile(`${here}${file}`, 'utf8'));
  const { component } = await componentize(source, {
    sourceName: file,
    witPath: `${here}wit`,
    worldName,
    // A pure component: no WASI but what the world imports.
    disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
  });
  await writeFile(`${outDir}${name}.wasm`, component);
  console.log(`wrote ${name}.wasm (${component.length} bytes)`);
}
