/**
 * A guest on an SMMUv3 vIOMMU, driven the way a VMM drives iommufd: GET_HW_INFO, a stage-2 nesting parent over
 * guest RAM, a vIOMMU and a vDEVICE with a virtual StreamID, a nested HWPT from the guest's vSTE whose CD table and
 * stage-1 tables live in guest memory, DMA through the nested walk, guest invalidation with vSIDs through
 * IOMMU_HWPT_INVALIDATE (strict mode finds no stale entry), a guest fault on the vEVENTQ with the virtual SID, and
 * a clean teardown. Plus the errno cases of the vSTE, of guest commands and of vSIDs without a vDEVICE.
 */
import { DmaFault } from "@iommu-sim/core";
import {
  destroy,
  getHwInfo,
  IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
  vfioDeviceAttachPt,
  vfioDeviceDetachPt,
} from "@iommu-sim/iommufd";
import { afterEach, describe, expect, it } from "vitest";
import {
  CMDQ_OP,
  EVT_ID,
  IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
  IOMMU_HWPT_DATA_ARM_SMMUV3,
  IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
  STE,
  STE_VAL,
} from "../../src/index.js";
import { captureCmds } from "../driver/helpers.js";
import {
  G,
  GIOVA,
  GUEST_ASID,
  guestBuildS1,
  guestRead,
  guestRemap,
  invalidate,
  ipa,
  nestedAlloc,
  PAGE,
  parentAlloc,
  type Vmm,
  vdeviceAlloc,
  veventqAlloc,
  viommuAlloc,
  vmmSetup,
  vsteS1,
} from "./env.js";

const VSID = 0x42;
const PSID = 0x10; // smmu-dma0
const HDR = 8;
const VEVT = 32;

let live: Vmm | undefined;
afterEach(async () => {
  // A failed test leaves its machine: tear it down without the clean-teardown checks.
  if (live) await live.m.teardown().catch(() => {});
  live = undefined;
});

/** The TLBI_NH_VA a guest driver issues for one 4 KiB leaf of its ASID (VMID left 0: the host fills it). */
function tlbiNhVa(asid: number, va: number): [number, number, number, number] {
  return [CMDQ_OP.TLBI_NH_VA, (asid << 16) >>> 0, ((va % 2 ** 32) & 0xfffff000) | 1, Math.floor(va / 2 ** 32)];
}

function dmaOutcome(v: Vmm, iova: number, bytes: Uint8Array): "ok" | "fault" {
  try {
    v.m.device("smmu-dma0").dmaWrite(iova, bytes);
    return "ok";
  } catch (e) {
    if (e instanceof DmaFault) return "fault";
    throw e;
  }
}

describe("guest-style flow on an ARM SMMUv3 vIOMMU", () => {
  it("hw info, nested DMA, guest TLBI with vSIDs, guest fault on the vEVENTQ, clean teardown", async () => {
    const v = await vmmSetup();
    live = v;
    // IOMMU_GET_HW_INFO: the ID registers, as the hardware has them.
    const info = await getHwInfo(v.p, v.iommufd, v.devId);
    expect(info.dataType).toBe(IOMMU_HW_INFO_TYPE_ARM_SMMUV3);
    expect(info.dataLen).toBe(40);
    const dv = new DataView(info.data.buffer, info.data.byteOffset, info.data.byteLength);
    const mmio = (off: number) => v.m.mmio.read32(v.smmu.mmioBase + off);
    expect(dv.getUint32(0, true)).toBe(0); // flags
    for (let i = 0; i < 6; i++) expect(dv.getUint32(8 + 4 * i, true)).toBe(mmio(4 * i));
    expect(dv.getUint32(32, true)).toBe(mmio(0x18));
    expect(dv.getUint32(36, true)).toBe(mmio(0x1c));
    expect(mmio(0x1c)).not.toBe(0); // AIDR: an architecture version is reported

    // Stage 2 over guest RAM, the vIOMMU on it (its VMID), the device's vSID.
    const s2 = await parentAlloc(v);
    const viommu = await viommuAlloc(v, s2);
    const vdev = await vdeviceAlloc(v, viommu, VSID);
    const q = await veventqAlloc(v, viommu, IOMMU_VEVENTQ_TYPE_ARM_SMMUV3, 8);

    // The guest builds its stage 1 and CD table in its RAM, then its vSTE becomes a nested HWPT.
    guestBuildS1(v);
    const nested = await nestedAlloc(v, viommu, vsteS1());
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    const ste = v.smmu.readSte(PSID);
    expect(Number((ste[0]! & STE.CFG.mask) >> 1n)).toBe(STE_VAL.CFG_NESTED);
    expect(ste[0]! & STE.S1CTXPTR_MASK).toBe(BigInt(ipa(G.CD)));

    // DMA at a guest IOVA lands in the guest page its stage 1 names (through stage 2 to the VMM's memory).
    expect(dmaOutcome(v, GIOVA + 0x10, new Uint8Array([1, 2, 3]))).toBe("ok");
    expect([...guestRead(v, ipa(G.DATA_A) + 0x10, 3)]).toEqual([1, 2, 3]);

    // The guest moves the page and invalidates its leaf with TLBI_NH_VA (vIOMMU: VMID forced).
    guestRemap(v, G.DATA_B);
    const inv = invalidate(v, viommu, [tlbiNhVa(GUEST_ASID, GIOVA)]);
    const cmds = await captureCmds(v.smmu, () => inv.run());
    expect(inv.cmd.entry_num).toBe(1);
    expect(cmds.map((c) => c.op)).toEqual([CMDQ_OP.TLBI_NH_VA, CMDQ_OP.CMD_SYNC]);
    const s2Vmid = cmds[0]!.w[1] & 0xffff;
    expect(s2Vmid).not.toBe(0);
    expect(cmds[0]!.w[1] >>> 16).toBe(GUEST_ASID);
    expect(dmaOutcome(v, GIOVA + 0x20, new Uint8Array([9, 8]))).toBe("ok");
    expect([...guestRead(v, ipa(G.DATA_B) + 0x20, 2)]).toEqual([9, 8]);
    expect([...guestRead(v, ipa(G.DATA_A) + 0x20, 2)]).toEqual([0, 0]);
    expect(v.hw.stats.staleReports).toBe(0);

    // CFGI_CD and ATC_INV name the vSID: the physical SID goes to the queue.
    const inv2 = invalidate(v, viommu, [
      [CMDQ_OP.CFGI_CD, VSID, 1, 0],
      [CMDQ_OP.CFGI_CD_ALL, VSID, 0, 0],
      [CMDQ_OP.TLBI_NSNH_ALL, 0, 0, 0],
    ]);
    const cmds2 = await captureCmds(v.smmu, () => inv2.run());
    expect(inv2.cmd.entry_num).toBe(3);
    expect(cmds2.map((c) => [c.op, c.w[1]])).toEqual([
      [CMDQ_OP.CFGI_CD, PSID],
      [CMDQ_OP.CFGI_CD_ALL, PSID],
      [CMDQ_OP.TLBI_NH_ALL, s2Vmid],
      [CMDQ_OP.CMD_SYNC, 0],
    ]);
    expect(dmaOutcome(v, GIOVA + 0x30, new Uint8Array([7]))).toBe("ok");
    expect(guestRead(v, ipa(G.DATA_B) + 0x30, 1)[0]).toBe(7);

    // A guest fault (a guest IOVA its stage 1 does not map): on the vEVENTQ with the virtual SID.
    const bad = GIOVA + 64 * PAGE;
    expect(dmaOutcome(v, bad, new Uint8Array([1]))).toBe("fault");
    await v.smmu.drainQueues();
    const rec = await v.p.read(q.fd, 4 * (HDR + VEVT));
    expect(rec.length).toBe(HDR + VEVT);
    const r = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
    expect(r.getUint32(0, true)).toBe(0); // header flags
    expect(r.getUint32(4, true)).toBe(0); // sequence
    expect(r.getUint32(HDR, true) & 0xff).toBe(EVT_ID.TRANSLATION);
    expect(r.getUint32(HDR + 4, true)).toBe(VSID);
    expect(r.getUint32(HDR + 16, true) + r.getUint32(HDR + 20, true) * 2 ** 32).toBe(bad);
    // The physical record carried the physical SID; nothing more is queued.
    expect(v.smmu.events.at(-1)?.sid).toBe(PSID);
    expect((await v.p.read(q.fd, HDR + VEVT)).length).toBe(0);

    // Teardown: detach, destroy in dependency order, close everything.
    await vfioDeviceDetachPt(v.p, v.devfd);
    await destroy(v.p, v.iommufd, nested);
    await v.p.close(q.fd);
    await destroy(v.p, v.iommufd, q.id);
    await destroy(v.p, v.iommufd, vdev);
    await destroy(v.p, v.iommufd, viommu);
    await destroy(v.p, v.iommufd, s2);
    await v.p.close(v.devfd);
    await v.p.close(v.iommufd);
    await v.p.exit();
    expect(v.m.userSpace.pages.pinnedCount).toBe(0);
    expect(v.hw.stats.staleReports).toBe(0);
    expect(v.smmu.gerrors).toEqual([]);
    live = undefined;
    await v.m.teardown();
    // No warnings (stale hits included), no leaks found at teardown.
    expect(v.m.diag.unexpected()).toEqual([]);
  });
});

describe("errnos", () => {
  it("vSTE validation: EIO for disallowed bits/config/EATS, EINVAL for type or length, EOPNOTSUPP without a vIOMMU", async () => {
    const v = await vmmSetup();
    live = v;
    const s2 = await parentAlloc(v);
    const viommu = await viommuAlloc(v, s2);
    await vdeviceAlloc(v, viommu, VSID);
    guestBuildS1(v);
    // Bits outside STRTAB_STE_0_NESTING_ALLOWED (bit 55) / STRTAB_STE_1_NESTING_ALLOWED (MEV, bit 19).
    await expect(nestedAlloc(v, viommu, vsteS1(1n << 55n))).rejects.toMatchObject({ code: "EIO" });
    await expect(nestedAlloc(v, viommu, vsteS1(0n, STE.MEV.mask))).rejects.toMatchObject({ code: "EIO" });
    // Config stage 2 / nested: EIO.
    for (const cfg of [STE_VAL.CFG_S2_TRANS, STE_VAL.CFG_NESTED]) {
      const b = new Uint8Array(16);
      new DataView(b.buffer).setBigUint64(0, 1n | (BigInt(cfg) << 1n), true);
      await expect(nestedAlloc(v, viommu, b)).rejects.toMatchObject({ code: "EIO" });
    }
    // EATS = S1CHK (2): EIO.
    await expect(nestedAlloc(v, viommu, vsteS1(0n, 2n << 28n))).rejects.toMatchObject({ code: "EIO" });
    // Another data type, a short struct: EINVAL; non-zero bytes past it: E2BIG; flags: EOPNOTSUPP.
    await expect(nestedAlloc(v, viommu, vsteS1(), { dataType: 1 })).rejects.toMatchObject({ code: "EINVAL" });
    await expect(nestedAlloc(v, viommu, vsteS1().subarray(0, 8))).rejects.toMatchObject({ code: "EINVAL" });
    const long = new Uint8Array(24);
    long.set(vsteS1());
    long[20] = 1;
    await expect(nestedAlloc(v, viommu, long)).rejects.toMatchObject({ code: "E2BIG" });
    // Not valid: an all-zero (abort) vSTE; abort/bypass attach without a vDEVICE requirement.
    const zero = await nestedAlloc(v, viommu, new Uint8Array(16));
    await destroy(v.p, v.iommufd, zero);
    // Straight on the parent HWPT (no vIOMMU): SMMUv3 has no domain_alloc_nested.
    await expect(nestedAlloc(v, s2, vsteS1())).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    // Only the ARM_SMMUV3 vIOMMU type.
    await expect(viommuAlloc(v, s2, 0xdead)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    void IOMMU_HWPT_DATA_ARM_SMMUV3;
    await v.p.exit();
    live = undefined;
    await v.m.teardown();
  });

  it("guest commands: unsupported opcode EIO with entry_num = handled; unknown vSID EIO; attach needs a vDEVICE", async () => {
    const v = await vmmSetup();
    live = v;
    const s2 = await parentAlloc(v);
    const viommu = await viommuAlloc(v, s2);
    guestBuildS1(v);
    const nested = await nestedAlloc(v, viommu, vsteS1());
    // A stage-1 vSTE without the device's vDEVICE: ENOENT (the vSID is needed for invalidations and events).
    await expect(vfioDeviceAttachPt(v.p, v.devfd, nested)).rejects.toMatchObject({ code: "ENOENT" });
    // Abort / bypass vSTEs attach without one.
    const bypass = new Uint8Array(16);
    new DataView(bypass.buffer).setBigUint64(0, 1n | (BigInt(STE_VAL.CFG_BYPASS) << 1n), true);
    const byp = await nestedAlloc(v, viommu, bypass);
    await vfioDeviceAttachPt(v.p, v.devfd, byp);
    expect(Number((v.smmu.readSte(PSID)[0]! & STE.CFG.mask) >> 1n)).toBe(STE_VAL.CFG_S2_TRANS);

    // A vSID with no vDEVICE: EIO, nothing handled, nothing issued.
    const a = invalidate(v, viommu, [[CMDQ_OP.CFGI_CD_ALL, VSID, 0, 0]]);
    const none = await captureCmds(v.smmu, () => expect(a.run()).rejects.toMatchObject({ code: "EIO" }));
    expect(a.cmd.entry_num).toBe(0);
    expect(none).toEqual([]);
    const vdev = await vdeviceAlloc(v, viommu, VSID);
    // Two good entries then CFGI_STE (not forwarded: STE changes go through HWPT replace) and one more.
    const b = invalidate(v, viommu, [
      [CMDQ_OP.TLBI_NH_ASID, GUEST_ASID << 16, 0, 0],
      [CMDQ_OP.CFGI_CD_ALL, VSID, 0, 0],
      [CMDQ_OP.CFGI_STE, VSID, 1, 0],
      [CMDQ_OP.TLBI_NH_ALL, 0, 0, 0],
    ]);
    const issued = await captureCmds(v.smmu, () => expect(b.run()).rejects.toMatchObject({ code: "EIO" }));
    expect(b.cmd.entry_num).toBe(2);
    expect(issued.map((c) => c.op)).toEqual([CMDQ_OP.TLBI_NH_ASID, CMDQ_OP.CFGI_CD_ALL, CMDQ_OP.CMD_SYNC]);
    expect(issued[1]!.w[1]).toBe(PSID);
    // Host-only opcodes too: TLBI_S2_IPA, TLBI_EL2_ALL.
    for (const op of [CMDQ_OP.TLBI_S2_IPA, CMDQ_OP.TLBI_EL2_ALL, CMDQ_OP.CFGI_ALL]) {
      const c = invalidate(v, viommu, [[op, 0, 0, 0]]);
      await expect(c.run()).rejects.toMatchObject({ code: "EIO" });
      expect(c.cmd.entry_num).toBe(0);
    }
    // Another entry type: EINVAL; an empty array of the right type: nothing to do.
    const t = invalidate(v, viommu, [[CMDQ_OP.TLBI_NH_ALL, 0, 0, 0]], IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 + 1);
    await expect(t.run()).rejects.toMatchObject({ code: "EINVAL" });
    expect(t.cmd.entry_num).toBe(0);
    await invalidate(v, viommu, []).run();

    // With the vDEVICE the stage-1 attach works.
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    expect(Number((v.smmu.readSte(PSID)[0]! & STE.CFG.mask) >> 1n)).toBe(STE_VAL.CFG_NESTED);
    await vfioDeviceDetachPt(v.p, v.devfd);
    for (const id of [nested, byp, vdev, viommu, s2]) await destroy(v.p, v.iommufd, id);
    await v.p.exit();
    expect(v.m.userSpace.pages.pinnedCount).toBe(0);
    expect(v.smmu.gerrors).toEqual([]);
    live = undefined;
    await v.m.teardown();
    // No warnings (stale hits included), no leaks found at teardown.
    expect(v.m.diag.unexpected()).toEqual([]);
  });

  it("a guest fault without a vEVENTQ is handled by the host as before", async () => {
    const v = await vmmSetup();
    live = v;
    const s2 = await parentAlloc(v);
    const viommu = await viommuAlloc(v, s2);
    const vdev = await vdeviceAlloc(v, viommu, VSID);
    guestBuildS1(v);
    const nested = await nestedAlloc(v, viommu, vsteS1());
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    expect(dmaOutcome(v, GIOVA + 64 * PAGE, new Uint8Array([1]))).toBe("fault");
    await v.smmu.drainQueues();
    expect(v.smmu.events.at(-1)?.id).toBe(EVT_ID.TRANSLATION);
    await vfioDeviceDetachPt(v.p, v.devfd);
    for (const id of [nested, vdev, viommu, s2]) await destroy(v.p, v.iommufd, id);
    await v.p.exit();
    live = undefined;
    await v.m.teardown();
  });
});

describe("strict mode", () => {
  it("finds the stale translation when the guest skips its TLBI_NH_VA", async () => {
    const v = await vmmSetup();
    live = v;
    const s2 = await parentAlloc(v);
    const viommu = await viommuAlloc(v, s2);
    const vdev = await vdeviceAlloc(v, viommu, VSID);
    guestBuildS1(v);
    const nested = await nestedAlloc(v, viommu, vsteS1());
    await vfioDeviceAttachPt(v.p, v.devfd, nested);
    expect(dmaOutcome(v, GIOVA, new Uint8Array([1]))).toBe("ok");
    guestRemap(v, G.DATA_B);
    dmaOutcome(v, GIOVA, new Uint8Array([2]));
    expect(v.hw.stats.staleReports).toBeGreaterThan(0);
    v.m.diag.acknowledge({ kind: "warning", message: /stale/ });
    await vfioDeviceDetachPt(v.p, v.devfd);
    for (const id of [nested, vdev, viommu, s2]) await destroy(v.p, v.iommufd, id);
    await v.p.exit();
    live = undefined;
    await v.m.teardown();
  });
});
