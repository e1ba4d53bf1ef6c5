/** The spec covers the whole uAPI: every iommufd command, every IOMMU_TEST_CMD op, the VFIO cdev and compat calls. */
import { IOMMUFD_CMD } from "@iommu-sim/iommufd";
import { IOMMU_TEST_OP } from "@iommu-sim/selftest";
import { describe, expect, it } from "vitest";
import { Execution, genIoctl, IOCTL_SPECS, IOMMUFD_IOCTL_NUMBERS, Rng, SPEC_BY_NAME } from "../src/index.js";

describe("spec", () => {
  it("has every iommufd ioctl and every selftest op", () => {
    const cmds = new Set(IOCTL_SPECS.map((s) => s.cmd));
    for (const n of IOMMUFD_IOCTL_NUMBERS) expect(cmds.has(n), `0x${n.toString(16)}`).toBe(true);
    expect(IOMMUFD_IOCTL_NUMBERS.length).toBe(Object.keys(IOMMUFD_CMD).length);
    for (const op of Object.keys(IOMMU_TEST_OP)) expect(SPEC_BY_NAME.has(`IOMMU_TEST_OP_${op}`), op).toBe(true);
    for (const v of [
      "VFIO_DEVICE_BIND_IOMMUFD",
      "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
      "VFIO_DEVICE_DETACH_IOMMUFD_PT",
      "VFIO_GET_API_VERSION",
      "VFIO_CHECK_EXTENSION",
      "VFIO_SET_IOMMU",
      "VFIO_IOMMU_GET_INFO",
      "VFIO_IOMMU_DIRTY_PAGES",
      "VFIO_IOMMU_MAP_DMA",
      "VFIO_IOMMU_UNMAP_DMA",
    ]) {
      expect(SPEC_BY_NAME.has(v), v).toBe(true);
    }
  });

  it("names only fields its structs have", () => {
    for (const s of IOCTL_SPECS) {
      if (!s.struct) continue;
      const names = new Set(s.struct.fields.map((f) => f.name));
      for (const k of Object.keys(s.fields)) expect(names.has(k), `${s.name}.${k}`).toBe(true);
      for (const p of s.presets ?? [])
        for (const k of Object.keys(p)) expect(names.has(k), `${s.name}.${k}`).toBe(true);
    }
  });

  it("generates all three argument forms, with IDs taken from earlier results", async () => {
    const ex = await Execution.start({ seed: 1 });
    const rng = new Rng(9);
    let id = 1;
    const ctx = { ex, rng, nextId: () => id++, opts: { uptr: true } };
    await ex.run({ id: id++, proc: 0, op: "open", path: "/dev/iommu" });
    await ex.run({
      id: id++,
      proc: 0,
      op: "ioctl",
      fd: { $ref: 1, field: "value" },
      name: "IOMMU_IOAS_ALLOC",
      form: "object",
      args: { size: 0, flags: 0, out_ioas_id: 0 },
    });
    const forms = new Set<string>();
    let refs = 0;
    for (let i = 0; i < 200; i++) {
      const calls = genIoctl(ctx, SPEC_BY_NAME.get("IOMMU_IOAS_MAP")!, 0);
      const c = calls[calls.length - 1]!;
      if (c.op !== "ioctl") continue;
      forms.add(c.form);
      if (JSON.stringify(c.args.ioas_id) === JSON.stringify({ $ref: 2, field: "out_ioas_id" })) refs++;
    }
    expect([...forms].sort()).toEqual(["bytes", "object", "uptr"]);
    expect(refs).toBeGreaterThan(100);
    await ex.finish();
  });
});
