// `npm run check`: fails when committed artefacts are stale: the code generated from
// proto/ under src/gen/, or the bundle in pm_server's demo folder. Writes nothing in the tree.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";

import { build } from "esbuild";

import { bundleOptions, COMMITTED_BUNDLE, ROOT } from "./bundle.mjs";

const problems = [];

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

const scratch = mkdtempSync(join(tmpdir(), "pm-client-gen-"));
try {
  // buf finds protoc-gen-es on PATH, as under `npm run`.
  const bin = join(ROOT, "node_modules", ".bin");
  execFileSync(join(bin, "buf"), ["generate", "--output", scratch], {
    cwd: ROOT,
    stdio: "inherit",
    env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
  });
  const fresh = join(scratch, "src", "gen");
  const committed = join(ROOT, "src", "gen");
  const names = new Set([...files(fresh).map((f) => relative(fresh, f)), ...files(committed).map((f) => relative(committed, f))]);
  for (const name of [...names].sort()) {
    let same = false;
    try {
      same = readFileSync(join(fresh, name)).equals(readFileSync(join(committed, name)));
    } catch {
      same = false;
    }
    if (!same) {
      problems.push(`src/gen/${name} differs from what proto/ generates: run npm run gen`);
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const result = await build({ ...bundleOptions(COMMITTED_BUNDLE), write: false });
const built = result.outputFiles[0]?.contents;
let onDisk;
try {
  onDisk = readFileSync(join(ROOT, COMMITTED_BUNDLE));
} catch {
  onDisk = undefined;
}
if (built === undefined || onDisk === undefined || !Buffer.from(built).equals(onDisk)) {
  problems.push(`${COMMITTED_BUNDLE} differs from a fresh build: run npm run build`);
}

if (problems.length > 0) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("generated code and demo bundle are up to date");
