/**
 * The independent decoder of hw/decode.ts against the model and the driver: a stage-2 domain and a nested guest
 * (CD and stage-1 tables in guest memory, read through stage 2) decode to the PA where the device's DMA landed; the
 * levels are the ones a developer expects (two-level stream table, STE, CD, each stage's levels); a hole in the
 * guest's stage 1 and an aborting STE decode as faults.
 */
import { DmaFault } from "@iommu-sim/core";
import { destroy, vfioDeviceAttachPt, vfioDeviceDetachPt } from "@iommu-sim/iommufd";
import { describe, expect, it } from "vitest";
import { smmuv3Hw } from "../../src/index.js";
import {
  G,
  GIOVA,
  GPA_BASE,
  guestBuildS1,
  guestRead,
  ipa,
  nestedAlloc,
  PAGE,
  parentAlloc,
  type Vmm,
  vdeviceAlloc,
  viommuAlloc,
  vmmSetup,
  vsteS1,
} from "../iommufd/env.js";

const PSID = 0x10; // smmu-dma0

function decode(v: Vmm, iova: number) {
  return smmuv3Hw.decodeSmmuv3Translation({
    memory: v.m.memory,
    readReg: (off) => v.m.mmio.read32(v.smmu.mmioBase + off),
    requesterId: PSID,
    pasid: -1,
    iova,
  });
}

describe("decodeSmmuv3Translation", () => {
  it("stage 2, then a nested guest: the decoded PA is where DMA landed; a guest hole and abort are faults", async () => {
    const v = await vmmSetup();
    const s2 = await parentAlloc(v);
    await vfioDeviceAttachPt(v.p, v.devfd, s2);
    // Stage 2 only: IPA = IOVA in the IOAS.
    const at = GPA_BASE + 9 * PAGE + 0x24;
    v.m.device("smmu-dma0").dmaWrite(at, new Uint8Array([4, 3, 2, 1]));
    const r2 = decode(v, at);
    expect(r2.result.fault).toBeUndefined();
    expect([...v.m.memory.readBytes(r2.result.pa!, 4)]).toEqual([4, 3, 2, 1]);
    expect(r2.levels.map((l) => l.name)).toContain("STE");
    expect(r2.levels.find((l) => l.name === "STE")!.fields.Config).toBe("S2");
    expect(r2.levels.at(-1)!.name).toMatch(/^S2 L3 page$/);

    // The nested guest.
    const viommu = await viommuAlloc(v, s2);
    const vdev = await vdeviceAlloc(v, viommu, 0x42);
    guestBuildS1(v);
    const nested = await nestedAlloc(v, viommu, vsteS1());
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    v.m.device("smmu-dma0").dmaWrite(GIOVA + 0x18, new Uint8Array([9, 8, 7]));
    expect([...guestRead(v, ipa(G.DATA_A) + 0x18, 3)]).toEqual([9, 8, 7]);
    const rn = decode(v, GIOVA + 0x18);
    expect(rn.result.fault).toBeUndefined();
    expect([...v.m.memory.readBytes(rn.result.pa!, 3)]).toEqual([9, 8, 7]);
    const names = rn.levels.map((l) => l.name);
    expect(names.slice(names.indexOf("STE"))).toEqual([
      "STE",
      `CD (IPA 0x${ipa(G.CD).toString(16)})`,
      "S1 L1 table",
      "S1 L2 table",
      "S1 L3 page",
      ...names.filter((n) => n.startsWith("S2 ")),
    ]);
    expect(rn.levels.find((l) => l.name === "STE")!.fields).toMatchObject({
      Config: "nested",
      S1ContextPtr: `0x${ipa(G.CD).toString(16)}`,
    });
    expect(rn.levels.find((l) => l.name.startsWith("CD"))!.fields).toMatchObject({ V: true, ASID: 5 });
    expect(rn.levels.find((l) => l.name === "S1 L3 page")!.fields.OA).toBe(`0x${ipa(G.DATA_A).toString(16)}`);

    // A guest IOVA its stage 1 does not map.
    const hole = GIOVA + 64 * PAGE;
    expect(decode(v, hole).result.fault).toMatch(/S1 translation fault at level 3/);
    expect(() => v.m.device("smmu-dma0").dmaWrite(hole, new Uint8Array([1]))).toThrow(DmaFault);

    // Detached (blocked): the STE aborts.
    await vfioDeviceDetachPt(v.p, v.devfd);
    expect(decode(v, GIOVA).result.fault).toMatch(/abort/);
    for (const id of [nested, vdev, viommu, s2]) await destroy(v.p, v.iommufd, id);
    await v.p.exit();
    await v.m.teardown();
  });
});
