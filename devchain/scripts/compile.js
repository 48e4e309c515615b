// Compiles contracts/*.sol with the solc npm package (no compiler download) into build/<Name>.json
// holding {abi, bytecode}. Imports resolve from node_modules.
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const root = path.resolve(__dirname, "..");
const sources = {};
for (const f of fs.readdirSync(path.join(root, "contracts"))) {
  if (f.endsWith(".sol")) {
    sources[f] = { content: fs.readFileSync(path.join(root, "contracts", f), "utf8") };
  }
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
function findImports(p) {
  const full = path.join(root, "node_modules", p);
  if (fs.existsSync(full)) return { contents: fs.readFileSync(full, "utf8") };
  return { error: "not found: " + p };
}
const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
fs.mkdirSync(path.join(root, "build"), { recursive: true });
for (const file of Object.keys(sources)) {
  for (const [name, c] of Object.entries(out.contracts[file])) {
    const artifact = { contractName: name, abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
    fs.writeFileSync(path.join(root, "build", name + ".json"), JSON.stringify(artifact));
    console.log("compiled " + name);
  }
}
