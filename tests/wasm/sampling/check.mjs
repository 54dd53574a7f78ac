// Checks the sampling contract in a wasm32 build of src/lib.rs.
// The expected values are the ones tests/sample.rs checks natively.
import { readFileSync } from "node:fs";

const path = process.argv[2];
const { instance } = await WebAssembly.instantiate(readFileSync(path));
const { hash_digest, kept } = instance.exports;

const checks = [
  ["hash_digest(100000, 42)", BigInt.asUintN(64, hash_digest(100000, 42n)), 14531974944059878806n],
  ["kept(1000000, 100000)", kept(1000000, 100000), 99739],
];
let failed = false;
for (const [name, got, want] of checks) {
  const ok = got === want;
  failed ||= !ok;
  console.log(`${ok ? "ok  " : "FAIL"} ${name} = ${got}${ok ? "" : ` (want ${want})`}`);
}
process.exit(failed ? 1 : 0);
