// The README's "Using it from code" example, run as written.
import { IOMMU_IOAS_ALLOC } from "@iommu-sim/iommufd";
import { expect, it } from "vitest";
import { bootFuzzMachine, formatReport, replay, runCampaign, seedPrograms, sys } from "../src/index.js";

it("runs the README example", async () => {
  const report = await runCampaign({ seed: 1, calls: 1000, loadEvery: 0 });
  expect(formatReport(report)).toMatch(/^fuzz: seed 1: \d+ calls/);
  expect(report.findings).toEqual([]);
  expect(await replay(seedPrograms()[0]!)).toEqual([]);
  const m = await bootFuzzMachine({ seed: 1 });
  const p = m.spawnProcess();
  const fd = await p.open("/dev/iommu");
  const cmd = { size: 0, flags: 0, out_ioas_id: 0 };
  await sys(() => p.ioctl(fd, IOMMU_IOAS_ALLOC, cmd));
  expect(cmd.out_ioas_id).toBe(1);
  await p.close(fd);
  await m.teardown();
}, 120_000);
