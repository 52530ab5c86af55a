// Builds {name}.wasm: a component of the world in wit/ (keyward's, plus the environment).
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';

// keyward's guest rules (keyward.js: `decodeBase64`, `kmsErrorMessage`) go in front of the handler.
const source = (await readFile('keyward.js', 'utf8')) + (await readFile('handler.js', 'utf8'));
const { component } = await componentize(source, {
  sourceName: 'handler.js',
  witPath: 'wit',
  worldName: 'secret-handler-js',
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{name}.wasm', component);
console.log(`wrote {name}.wasm (${component.length} bytes)`);
