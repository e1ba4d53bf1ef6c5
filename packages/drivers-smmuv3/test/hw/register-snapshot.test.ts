/**
 * Register reads and their side effects: an MMIO read of CMDQ_CONS lets the model consume commands (a driver's
 * poll), while `peek32` and `registerSnapshot` leave the model exactly as it was.
 */
import { afterEach, expect, it } from "vitest";
import { newCmdEnt, SMMU_REG, type Smmuv3Hw } from "../../src/index.js";
import { boot, teardownAll } from "../driver/helpers.js";

afterEach(teardownAll);

it("snapshots registers without consuming commands; an MMIO read of CMDQ_CONS does consume", async () => {
  const b = await boot();
  const hw = b.m.hw.get("smmu0") as Smmuv3Hw;
  hw.cmdqBatch = 0;
  // Queue two commands without waiting (the model consumes nothing while cmdqBatch is 0).
  b.smmu.cmdq.issue([newCmdEnt(0x01), newCmdEnt(0x01)], 2, false);
  const base = b.smmu.mmioBase;
  const prod = hw.peek32(SMMU_REG.CMDQ_PROD);
  const cons = hw.peek32(SMMU_REG.CMDQ_CONS);
  expect(prod).not.toBe(cons);
  const snap = hw.registerSnapshot();
  expect(snap.CMDQ_CONS).toBe(cons);
  expect(snap.CMDQ_PROD).toBe(prod);
  expect(snap.IDR0).toBe(b.m.mmio.read32(base + SMMU_REG.IDR0));
  expect(hw.registerSnapshot()).toEqual(snap);
  expect(hw.peek32(SMMU_REG.CMDQ_CONS)).toBe(cons);
  // The MMIO read is the driver's poll: the model makes progress.
  hw.cmdqBatch = 8;
  expect(b.m.mmio.read32(base + SMMU_REG.CMDQ_CONS)).toBe(prod);
  await b.smmu.drainQueues();
});

it("names every event ID the same in the driver's exports and the model's", async () => {
  const { EVT_ID } = await import("../../src/index.js");
  const { smmuv3Hw } = await import("../../src/index.js");
  for (const [name, id] of Object.entries(smmuv3Hw.EVT_ID)) expect(EVT_ID[name as keyof typeof EVT_ID]).toBe(id);
});
