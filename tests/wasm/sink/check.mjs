// Runs the Parquet sink built for wasm32 and prints the module's size.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const path = process.argv[2];
const bytes = readFileSync(path);
const { instance } = await WebAssembly.instantiate(bytes, {});
const len = instance.exports.parquet_len(10000);
const ok = len > 0 && len !== 0xffffffff;
console.log(`${ok ? "ok  " : "FAIL"} parquet_len(10000) = ${len} bytes (PAR1 at both ends, 10000 rows)`);
console.log(`module: ${bytes.length} bytes, ${gzipSync(bytes, { level: 9 }).length} bytes gzipped`);
process.exit(ok ? 0 : 1);
