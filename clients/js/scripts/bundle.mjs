// How the client is bundled; shared by build.mjs (writes) and check.mjs (compares).
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** dist/ for applications; pm_server's demo folder, which ships the committed copy. */
export const OUTPUTS = ["dist/pm-client.js", "../../packages/pm_server/src/pm_server/demo/static/pm-client.js"];

/** The committed copy that `npm run check` compares with a fresh build. */
export const COMMITTED_BUNDLE = OUTPUTS[1];

export function bundleOptions(outfile) {
  return {
    absWorkingDir: ROOT,
    entryPoints: ["src/index.ts"],
    outfile,
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2020",
    minify: true,
    legalComments: "eof",
    banner: {
      js:
        "// pm-realtime browser client (pm.v1). Built by `npm run build` in clients/js; do not edit.\n" +
        "// Includes @bufbuild/protobuf (Apache-2.0, https://github.com/bufbuild/protobuf-es).",
    },
    logLevel: "warning",
  };
}
