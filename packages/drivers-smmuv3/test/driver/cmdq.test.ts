/**
 * The command queue under pressure: a tiny CMDQ on an SMMU that consumes one command per CONS poll
 * (`cmdqBatch: 1`), so a batch larger than the ring makes the driver wait for space the way
 * arm_smmu_cmdq_issue_cmdlist does (queue_has_space / arm_smmu_cmdq_poll_until_not_full), and an SMMU that stops
 * consuming (`cmdqBatch` 0) makes the bounded poll give up with ETIMEDOUT and a "CMDQ timeout" warning.
 */
import {
  iommuAttachDevice,
  iommuDetachDevice,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuPagingDomainAllocFlags,
} from "@iommu-sim/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type ArmSmmuDomain, CMDQ_OP, newCmdEnt, SMMU_REG, type Smmuv3Hw } from "../../src/index.js";
import { type Booted, boot, teardownAll } from "./helpers.js";

afterEach(teardownAll);

const GiB = 2 ** 30;
const SZ_2M = 2 ** 21;

interface Consumed {
  op: number;
  /** dword1 (the TLBI address, 4 KiB aligned) as a number. */
  addr: number;
  cons: number;
}

/** Boot with a `2^log2`-entry command queue, no range invalidation, and a stage-1 domain attached to smmu-dma0. */
async function setup(
  log2: number,
): Promise<Booted & { hw: Smmuv3Hw; d: ArmSmmuDomain; seen: Consumed[]; done: () => Promise<void> }> {
  const b = await boot({ cmdqSizeLog2: log2, cmdqBatch: 1, ril: false });
  const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
  const dev = b.m.driverCore.deviceFor("smmu-dma0")!;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const d = (await iommuPagingDomainAllocFlags(dev, 0)) as ArmSmmuDomain;
  await iommuAttachDevice(d, dev);
  b.smmu.cmdq.issue([], 0, true); // drain the attach's trailing PREFETCH_CFG: driver CONS == PROD
  const seen: Consumed[] = [];
  hw.onCommand = (w, cons) => seen.push({ op: w[0]! & 0xff, addr: (w[2]! & 0xfffff000) + w[3]! * 2 ** 32, cons });
  const done = async () => {
    hw.cmdqBatch = 1;
    hw.onCommand = undefined;
    vi.restoreAllMocks();
    await iommuDetachDevice(d, dev);
    iommuDomainFree(d);
    await iommuDeviceReleaseDmaOwner(dev);
  };
  return { ...b, hw, d, seen, done };
}

/** Count the driver's CONS reads and the queue space it saw before each. */
function spyCons(b: Booted): { polls: number; spaceBefore: number[] } {
  const out = { polls: 0, spaceBefore: [] as number[] };
  const real = b.smmu.readl.bind(b.smmu);
  vi.spyOn(b.smmu, "readl").mockImplementation((off: number) => {
    if (off === SMMU_REG.CMDQ_CONS) {
      out.polls++;
      out.spaceBefore.push(b.smmu.cmdq.q.space());
    }
    return real(off);
  });
  return out;
}

describe("command queue full", () => {
  it.each([2, 3])(
    "a 1 GiB range invalidation (512 TLBIs) through a %i-bit queue waits for space and completes in order",
    async (log2) => {
      const b = await setup(log2);
      expect(b.hw.cmdqBatch).toBe(1);
      expect(b.smmu.cmdq.q.maxNShift).toBe(log2);
      const cap = 2 ** log2;
      const iova = 4 * GiB;
      const polls = spyCons(b);
      const issued = b.smmu.cmdq.issued;
      b.drv.tlbInvRangeDomain(b.d, iova, GiB, SZ_2M, true);

      // Every TLBI in address order, then the CMD_SYNC, each consumed exactly once at consecutive CONS values.
      const n = GiB / SZ_2M;
      expect(b.smmu.cmdq.issued - issued).toBe(n + 1);
      expect(b.seen.map((c) => c.op)).toEqual([...Array(n).fill(CMDQ_OP.TLBI_NH_VA), CMDQ_OP.CMD_SYNC]);
      expect(b.seen.slice(0, n).map((c) => c.addr)).toEqual(Array.from({ length: n }, (_, i) => iova + i * SZ_2M));
      const wrap = 2 * cap;
      for (let i = 1; i < b.seen.length; i++) expect(b.seen[i]!.cons).toBe((b.seen[i - 1]!.cons + 1) % wrap);
      expect(b.hw.pendingCommands).toBe(0);
      expect(b.smmu.cmdq.q.cons).toBe(b.smmu.cmdq.q.prod); // the CMD_SYNC was seen completed

      // The driver had to wait: it polled CONS with too little room, and each poll bought progress.
      expect(polls.polls).toBeGreaterThan(n / 2);
      expect(polls.spaceBefore.filter((s) => s < cap - 1).length).toBeGreaterThan(n / 2);
      expect(b.m.diag.unexpected()).toEqual([]);
      await b.done();
    },
  );

  it("many CFGI_STE in one issue (more than the ring holds) are chunked and all consumed", async () => {
    const b = await setup(2);
    const ents = Array.from({ length: 10 }, (_, sid) => Object.assign(newCmdEnt(CMDQ_OP.CFGI_STE), { sid }));
    b.smmu.cmdq.issue(ents, ents.length, true);
    expect(b.seen.map((c) => c.op)).toEqual([...Array(10).fill(CMDQ_OP.CFGI_STE), CMDQ_OP.CMD_SYNC]);
    expect(b.hw.pendingCommands).toBe(0);
    await b.done();
  });

  it("an SMMU that stops consuming: the queue-full wait gives up with ETIMEDOUT and 'CMDQ timeout'", async () => {
    const b = await setup(2);
    b.hw.cmdqBatch = 0; // the SMMU makes no progress any more
    const polls = spyCons(b);
    const ents = Array.from({ length: 8 }, (_, sid) => Object.assign(newCmdEnt(CMDQ_OP.CFGI_STE), { sid }));
    const warns = b.m.diag.expectWarningSync({ kind: "warning", message: /CMDQ timeout/ }, () =>
      expect(() => b.smmu.cmdq.issue(ents, ents.length, true)).toThrow(expect.objectContaining({ code: "ETIMEDOUT" })),
    );
    expect(warns).toHaveLength(1);
    expect(polls.polls).toBe(64); // bounded, not a hang
    expect(b.seen).toEqual([]);
    expect(b.hw.pendingCommands).toBe(3); // the first chunk was published, nothing consumed

    // Once the SMMU runs again the driver recovers: the stranded chunk and a new sync complete.
    b.hw.cmdqBatch = 1;
    b.smmu.cmdq.issue([], 0, true);
    expect(b.seen.map((c) => c.op)).toEqual([...Array(3).fill(CMDQ_OP.CFGI_STE), CMDQ_OP.CMD_SYNC]);
    expect(b.hw.pendingCommands).toBe(0);
    await b.done();
  });

  it("an SMMU that stops consuming: the CMD_SYNC poll gives up with ETIMEDOUT", async () => {
    const b = await setup(3);
    b.hw.cmdqBatch = 0;
    await b.m.diag.expectWarning({ kind: "warning", message: /CMD_SYNC timeout/ }, () =>
      expect(() => b.smmu.cmdq.issueOne(newCmdEnt(CMDQ_OP.TLBI_NSNH_ALL), true)).toThrow(
        expect.objectContaining({ code: "ETIMEDOUT" }),
      ),
    );
    expect(b.hw.step()).toBe(2);
    expect(b.seen.map((c) => c.op)).toEqual([CMDQ_OP.TLBI_NSNH_ALL, CMDQ_OP.CMD_SYNC]);
    await b.done();
  });
});
