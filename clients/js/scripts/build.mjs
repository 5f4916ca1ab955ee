// `npm run build`: one ESM bundle of the client (protobuf runtime included), written to
// dist/ for applications and to pm_server's demo static folder, which ships it.
import { build } from "esbuild";

import { bundleOptions, OUTPUTS } from "./bundle.mjs";

for (const outfile of OUTPUTS) {
  await build(bundleOptions(outfile));
  console.log(`wrote ${outfile}`);
}
