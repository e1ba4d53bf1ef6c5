#!/usr/bin/env node
// Check a built API site (default docs/api): kernel names typed into its search land on the TypeScript that mirrors
// them, @linux tags render as links to the kernel cross-reference, core's exports are grouped by subsystem, and
// the docs/ pages are pages. Exits 1 naming what is missing. `npm run docs` runs it after typedoc.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { inflateSync } from "node:zlib";

const out = process.argv[2] ?? "docs/api";
const require = createRequire(join(process.cwd(), "node_modules/typedoc/package.json"));
const lunr = require("lunr");

/** [Linux name typed into the search, the API it must find]. */
const SEARCHES = [
  ["arm_smmu_write_entry", "armSmmuWriteEntry"],
  ["iommu_probe_device", "iommuProbeDevice"],
  ["iommufd_device_bind", "iommufdDeviceBind"],
  ["refcount_t", "Refcount"],
];

const problems = [];
const searchJs = readFileSync(join(out, "assets/search.js"), "utf8");
const b64 = /window\.searchData = "([^"]+)"/.exec(searchJs)?.[1];
const data = JSON.parse(inflateSync(Buffer.from(b64 ?? "", "base64")).toString("utf8"));
const index = lunr.Index.load(data.index);
/** What the site's search box does with a query: exact term boosted, then prefix matches. */
function search(q) {
  return index
    .query((query) => {
      for (const term of lunr.tokenizer(q)) {
        query.term(term, { boost: 10 });
        query.term(term, { wildcard: lunr.Query.wildcard.TRAILING });
      }
    })
    .map((r) => data.rows[Number(r.ref)]);
}
for (const [name, expected] of SEARCHES) {
  const found = search(name);
  if (!found.slice(0, 5).some((r) => r.name === expected)) {
    problems.push(
      `search for ${name} does not list ${expected} in its first results (got ${
        found
          .slice(0, 5)
          .map((r) => r.name)
          .join(", ") || "nothing"
      })`,
    );
  }
}

const page = join(out, "functions/_iommu-sim_drivers-smmuv3.armSmmuWriteEntry.html");
if (!existsSync(page)) problems.push(`${page} is missing`);
else if (
  !readFileSync(page, "utf8").includes('href="https://elixir.bootlin.com/linux/latest/A/ident/arm_smmu_write_entry"')
) {
  problems.push(`${page}: its @linux tag does not link arm_smmu_write_entry to elixir.bootlin.com`);
}
const core = readFileSync(join(out, "modules/_iommu-sim_core.html"), "utf8");
for (const cat of ["kernel", "platform", "machine", "user", "iommu", "pgtable"]) {
  if (!core.includes(`id="${cat}"`) && !core.includes(`id="${cat}-1"`)) problems.push(`core has no "${cat}" category`);
}
for (const doc of ["architecture", "divergences", "foundation-contracts", "user-space-contracts"]) {
  if (![`${doc}`, `docs_${doc}`].some((n) => existsSync(join(out, `documents/${n}.html`))))
    problems.push(`docs/${doc}.md is not rendered as a page`);
}

// A markdown file a README links to but the site does not render is copied to media/ and opens as a raw file.
const media = join(out, "media");
if (existsSync(media)) {
  for (const f of readdirSync(media))
    if (f.endsWith(".md")) problems.push(`media/${f}: a linked page opens as a raw file`);
}

if (problems.length > 0) {
  process.stderr.write(`docs check failed (${out}):\n${problems.map((p) => `  ${p}`).join("\n")}\n`);
  process.exitCode = 1;
}
