#!/usr/bin/env node
// Compiles the ERC-20 tokens the tests and the demo deploy on anvil, with the npm `solc`
// pinned in package-lock.json (standard JSON interface, imports resolved from node_modules),
// into build/contracts/<Name>.json: {contractName, sourceName, abi, bytecode, ...}, the
// fields of a Hardhat artifact. Bytecode is never committed: scripts/setup.sh runs this.
// Idempotent: every run rewrites the same files (each atomically). Exits 1 on compile errors.
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const NODE_MODULES = path.join(ROOT, 'node_modules');
const OUT_DIR = path.join(ROOT, 'build', 'contracts');

// Source unit name -> the contract of that file to write out.
const TARGETS = {
  '@statechannels/nitro-protocol/contracts/Token.sol': 'Token',
  'contracts/test-tokens/FalseToken.sol': 'FalseToken',
  'contracts/test-tokens/FeeToken.sol': 'FeeToken',
  'contracts/test-tokens/NoReturnToken.sol': 'NoReturnToken',
};

function fail(message) {
  console.error(`compile-contracts: ${message}`);
  process.exit(1);
}

// A source unit name as a file: our own sources relative to the repository root, everything
// else (`@openzeppelin/...`, `@statechannels/...`) inside node_modules.
function sourcePath(name) {
  if (path.isAbsolute(name) || name.split('/').includes('..')) {
    return null;
  }
  return name.startsWith('contracts/') ? path.join(ROOT, name) : path.join(NODE_MODULES, name);
}

function readSource(name) {
  const file = sourcePath(name);
  if (file === null) {
    return { error: `refusing to import ${name} (absolute or outside the tree)` };
  }
  try {
    return { contents: fs.readFileSync(file, 'utf8') };
  } catch (e) {
    return { error: `cannot read ${name} (${file}): ${e.code || e.message}; did \`npm ci\` run?` };
  }
}

let solc;
try {
  solc = require(path.join(NODE_MODULES, 'solc'));
} catch (e) {
  fail(`the npm package solc is not installed (${e.message}): run \`npm ci\` at the repository root`);
}

const sources = {};
for (const name of Object.keys(TARGETS)) {
  const read = readSource(name);
  if (read.error) {
    fail(read.error);
  }
  sources[name] = { content: read.contents };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'london',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.bytecode.linkReferences'] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: readSource }));
const diagnostics = output.errors || [];
for (const d of diagnostics.filter((d) => d.severity !== 'error')) {
  console.error(d.formattedMessage || d.message);
}
const errors = diagnostics.filter((d) => d.severity === 'error');
if (errors.length > 0) {
  for (const e of errors) {
    console.error(e.formattedMessage || e.message);
  }
  fail(`solc ${solc.version()} failed with ${errors.length} error(s); nothing written`);
}

fs.mkdirSync(OUT_DIR, { recursive: true });
for (const [sourceName, contractName] of Object.entries(TARGETS)) {
  const compiled = output.contracts && output.contracts[sourceName] && output.contracts[sourceName][contractName];
  if (!compiled || !compiled.evm || !compiled.evm.bytecode.object) {
    fail(`solc produced no bytecode for ${contractName} in ${sourceName}`);
  }
  const artifact = {
    contractName,
    sourceName,
    abi: compiled.abi,
    bytecode: `0x${compiled.evm.bytecode.object}`,
    linkReferences: compiled.evm.bytecode.linkReferences || {},
    compiler: { version: solc.version(), settings: input.settings },
  };
  const file = path.join(OUT_DIR, `${contractName}.json`);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(artifact, null, 2)}\n`);
  fs.renameSync(tmp, file);
}
console.log(`compile-contracts: ${Object.values(TARGETS).join(', ')} -> ${path.relative(ROOT, OUT_DIR)}/ (solc ${solc.version()})`);
