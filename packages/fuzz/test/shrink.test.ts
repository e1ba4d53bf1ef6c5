/**
 * The fuzzer finds a bug planted in the kernel (a WARN after an IOAS_UNMAP that unmapped something), shrinks the
 * program to the few calls it needs, replays it exactly, and writes a reproducer whose body fails on the planted
 * machine and passes on a clean one.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KernelError, type Machine } from "@iommu-sim/core";
import * as I from "@iommu-sim/iommufd";
import * as S from "@iommu-sim/selftest";
import { afterAll, describe, expect, it } from "vitest";
import {
  bootFuzzMachine,
  type CampaignReport,
  hex,
  ioctlBytes,
  ioctlUptr,
  type Program,
  programFromJson,
  programToJson,
  replay,
  reproducerBody,
  runCampaign,
  s32,
  sys,
  u32,
  u64,
  writeReproducer,
} from "../src/index.js";
import { plantAfter } from "./plant.js";

const plantUnmapWarn = (m: Machine) =>
  plantAfter(m, I.IOMMUFD_CMD.IOAS_UNMAP, (ucmd) => {
    if ((ucmd.cmd as { length: bigint }).length > 0n) m.diag.warnOn(true, "planted: unmap of a mapped range");
  });

const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor as new (
  ...args: string[]
) => (...a: unknown[]) => Promise<void>;

/** Run a reproducer body the way its file would, on machine `m`. */
async function runBody(body: string, m: Machine): Promise<void> {
  const scope: Record<string, unknown> = { ...I, ...S, sys, u32, s32, u64, hex, ioctlBytes, ioctlUptr };
  const names = Object.keys(scope).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && n !== "m");
  await new AsyncFunction("m", ...names, body)(m, ...names.map((n) => scope[n]));
}

describe("a planted bug", () => {
  let report: CampaignReport;
  const dir = mkdtempSync(join(tmpdir(), "fuzz-findings-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("is found and shrunk to the calls it needs", async () => {
    report = await runCampaign({
      seed: 5,
      calls: 20_000,
      exec: { setup: plantUnmapWarn },
      loadEvery: 0,
      stopAfterFindings: 1,
      out: dir,
    });
    expect(report.findings.length).toBe(1);
    const f = report.findings[0]!;
    expect(f.finding.signature).toMatch(/^warning:IOMMU_IOAS_UNMAP:warning: planted: unmap of a mapped range/);
    const names = f.program.calls.map((c) => (c.op === "ioctl" ? c.name : c.op));
    // open, IOAS_ALLOC, (mmap), IOAS_MAP, IOAS_UNMAP: nothing else survives.
    expect(names).toEqual(expect.arrayContaining(["open", "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP"]));
    expect(f.program.calls.length).toBeLessThanOrEqual(5);
    expect(f.originalLength).toBeGreaterThanOrEqual(f.program.calls.length);
    expect(f.program.calls.every((c) => !c.failNth)).toBe(true);
  }, 300_000);

  it("replays exactly, from its JSON too, and only on the planted machine", async () => {
    const f = report.findings[0]!;
    const again = programFromJson(programToJson(f.program));
    expect(again).toEqual(f.program);
    const found = await replay(again, { setup: plantUnmapWarn });
    expect(found.map((x) => x.signature)).toContain(f.finding.signature);
    expect(await replay(again)).toEqual([]);
  });

  it("becomes a reproducer that fails on the planted machine and passes on a clean one", async () => {
    const f = report.findings[0]!;
    const { body } = reproducerBody(f.program, f.finding);
    expect(body).toContain("IOMMU_IOAS_UNMAP");
    const planted = await bootFuzzMachine({ seed: f.program.seed });
    plantUnmapWarn(planted);
    await expect(runBody(body, planted)).rejects.toThrow(/planted: unmap of a mapped range/);
    await runBody(body, await bootFuzzMachine({ seed: f.program.seed }));
    // The files the campaign wrote: the vitest reproducer and the program for --replay.
    const ts = readFileSync(f.reproducer!, "utf8");
    expect(ts).toContain('from "@iommu-sim/fuzz"');
    expect(ts).toContain("await m.teardown();");
    expect(ts).toMatch(/IOMMU_IOAS_UNMAP/);
    const json = programFromJson(readFileSync(f.reproducer!.replace(/\.test\.ts$/, ".json"), "utf8"));
    expect(json).toEqual(f.program);
    expect(writeReproducer(dir, f.program, f.finding)).toBe(f.reproducer);
  });
});

describe("checks", () => {
  const program = (calls: Program["calls"]): Program => ({ seed: 1, calls });
  const open = { id: 1, proc: 0, op: "open", path: "/dev/iommu" } as const;
  const ioasAlloc = {
    id: 2,
    proc: 0,
    op: "ioctl",
    fd: { $ref: 1, field: "value" },
    name: "IOMMU_IOAS_ALLOC",
    form: "object",
    args: { size: 0, flags: 0, out_ioas_id: 0 },
  } as const;
  const alloc = I.IOMMUFD_CMD.IOAS_ALLOC;

  it("a clean program finds nothing", async () => {
    expect(await replay(program([open, ioasAlloc]))).toEqual([]);
  });

  it("an exception other than KernelError is a finding", async () => {
    const setup = (m: Machine) =>
      plantAfter(m, alloc, () => {
        throw new TypeError("planted");
      });
    const f = await replay(program([open, ioasAlloc]), { setup });
    expect(f.map((x) => x.signature)).toContain("exception:IOMMU_IOAS_ALLOC:TypeError: planted");
  });

  it("an errno user space must never see is a finding", async () => {
    const setup = (m: Machine) =>
      plantAfter(m, alloc, () => {
        throw new KernelError("EPROBE_DEFER", "planted");
      });
    const f = await replay(program([open, ioasAlloc]), { setup });
    expect(f.map((x) => x.kind)).toContain("bad-errno");
  });

  it("a call sleeping past the virtual-time bound is a finding", async () => {
    const setup = (m: Machine) => plantAfter(m, alloc, () => m.scheduler.sleep(30e9));
    const f = await replay(program([open, ioasAlloc]), { setup });
    expect(f.map((x) => x.kind)).toContain("blocked");
  });

  it("a diagnostic during a call, and a leak at teardown, are findings", async () => {
    const setup = (m: Machine) => {
      plantAfter(m, alloc, () => void m.diag.report("leak", "planted leak"));
      m.diag.addTeardownCheck("planted", () => ["planted teardown leak"]);
    };
    const f = await replay(program([open, ioasAlloc]), { setup });
    expect(f.map((x) => x.signature)).toEqual([
      "warning:IOMMU_IOAS_ALLOC:leak: planted leak",
      "teardown:leak: planted teardown leak",
    ]);
  });
});
