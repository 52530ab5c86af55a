// Builds hello-js.wasm next to the Rust guests (target/wasm32-wasip2/release/); run by `cargo xtask build-guests`.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, readFile, writeFile } from 'node:fs/promises';

const here = new URL('.', import.meta.url).pathname;
const out = `${here}../../../target/wasm32-wasip2/release/hello-js.wasm`;
// keyward's guest rules for JavaScript (guest/js/keyward.js), then the guest.
const source = (await readFile(`${here}../../js/keyward.js`, 'utf8')) + (await readFile(`${here}hello.js`, 'utf8'));
const { component } = await componentize(source, {
  sourceName: 'hello.js',
  witPath: `${here}wit`,
  worldName: 'secret-handler-js',
  // A pure component: no WASI but the environment the world imports.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await mkdir(new URL('../../../target/wasm32-wasip2/release/', import.meta.url), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
