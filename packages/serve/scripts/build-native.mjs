// Build native/iommu-shim.c into native/build/libiommu-shim.so with the machine's C compiler (CC, else cc).
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const native = join(dirname(fileURLToPath(import.meta.url)), "..", "native");
mkdirSync(join(native, "build"), { recursive: true });
const cc = process.env.CC ?? "cc";
const out = join(native, "build", "libiommu-shim.so");
execFileSync(
  cc,
  ["-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", out, join(native, "iommu-shim.c"), "-ldl", "-lpthread"],
  {
    stdio: "inherit",
  },
);
console.log(out);
