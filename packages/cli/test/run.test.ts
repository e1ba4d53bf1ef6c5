/**
 * `iommu-sim run`: the default scenario end to end (what `npm start` shows), scenario files and their errors,
 * failing steps, leaks and warnings turning into a failed run, --module, --json, --trace, colour.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultPlatform } from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import { BUILTIN_MODULES, type CliIo, DEFAULT_SCENARIO, main, parseScenario, runScenario } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const examples = join(here, "..", "..", "..", "examples");
const fixture = (f: string) => join(here, "fixtures", f);

async function runWith(extra: Partial<CliIo>, ...argv: string[]) {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s), ...extra });
  return { code, out, err };
}
const run = (...argv: string[]) => runWith({}, ...argv);

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "iommu-sim-run-"));
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

const PREFIX = "name: t\nsteps:\n  - do: boot\n  - do: spawn\n  - do: open-iommufd\n";

describe("the default scenario", () => {
  it("boots, drives every landed IOMMU kind, tears down clean, and prints a summary per IOMMU", async () => {
    const r = await run("run");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    // One line per step, each ok; the parts a VMM developer looks for.
    expect(r.out).not.toMatch(/FAIL/);
    expect(r.out).toMatch(/ok +boot: .*mock0:mock-iommu .*smmu0:arm-smmu-v3/);
    expect(r.out).toMatch(/bind smmu-dma0: \/dev\/vfio\/devices\/vfio\d+ \(behind smmu0\) bound: dev_id \d+/);
    expect(r.out).toMatch(/DMA write to the read-only page: .*permission fault \(as expected\)/);
    expect(r.out).toMatch(/guest DMA through stage 1 \+ stage 2: .*landed in guest-ram at guest page 5/);
    expect(r.out).toMatch(/guest DMA after its invalidation: .*landed in guest-ram at guest page 6/);
    expect(r.out).toMatch(/veventq-read veventq0: 1 record\(s\): event 0x10 vSID 0x42/);
    expect(r.out).toMatch(/page-requests fq0: 1 page request.*answered SUCCESS/);
    expect(r.out).toMatch(/unbind smmu-dma0: .*tombstoned VDEVICE id \d+/);
    expect(r.out).toMatch(/"after the unbind": .*VDEVICE#\d+ vdev0 \[tombstone\]/);
    expect(r.out).toMatch(/destroy the tombstoned vDEVICE: failed with ENOENT, as expected/);
    expect(r.out).toMatch(/teardown: nothing leaked: 0 pages pinned, 0 diagnostics/);
    expect(r.out).toMatch(
      /^IOMMU +kind +translations +IOTLB hit rate +walks +faults +page reqs +commands +invalidations$/m,
    );
    expect(r.out).toMatch(/^mock0 +mock +\d+/m);
    expect(r.out).toMatch(/^smmu0 +smmuv3 +\d+/m);
    // VT-d: DMA through a first-stage table, an IOTLB hit, a write to a read-only page refused.
    expect(r.out).toMatch(/VT-d DMA read back \(an IOTLB hit\): .*ok \[a5 5a c3 3c\]/);
    expect(r.out).toMatch(/VT-d DMA write to the read-only page: .*vtd0: .*write \(as expected\)/);
    expect(r.out).toMatch(/^vtd0 +vtd +4 +25\.0% +3 +2 +0 +\d+ +\d+$/m);
    // AMD-Vi: DMA through a v1 table, an IOTLB hit, a permission fault, a not-present fault, an inspected path.
    expect(r.out).toMatch(/bind amd-nic0: \/dev\/vfio\/devices\/vfio\d+ \(behind amd0\) bound/);
    expect(r.out).toMatch(/AMD-Vi DMA write to guest RAM: .*landed in ram3 at \+0x200/);
    expect(r.out).toMatch(/AMD-Vi DMA write to the read-only page: .*amd0: IO_PAGE_FAULT: permission \(as expected\)/);
    expect(r.out).toMatch(/inspect amd-nic0: .*DTE → L4 PDE → L3 PDE → L2 PDE → L1 page → PA 0x/);
    expect(r.out).toMatch(/^amd0 +amd +4 +25\.0% +3 +2 +0 +\d+ +\d+$/m);
    expect(r.out).toMatch(/PASS: \d+ steps/);
  });

  it("--json: the counters come from the hardware models and agree with what the scenario did", async () => {
    const r = await run("run", "--json");
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as {
      ok: boolean;
      summary: { name: string; counters: Record<string, number> }[];
      trace: Record<string, number>;
    };
    expect(j.ok).toBe(true);
    const smmu = j.summary.find((s) => s.name === "smmu0")!.counters;
    const mock = j.summary.find((s) => s.name === "mock0")!.counters;
    // Five SMMUv3 DMAs (stage 2, nested twice, nested after TLBI, the guest fault): one IOTLB hit, one fault.
    expect(smmu.translations).toBe(5);
    expect(smmu.iotlbHits).toBe(1);
    expect(smmu.faults).toBe(1);
    expect(smmu.commands).toBeGreaterThan(0);
    expect(smmu.invalidations).toBeGreaterThan(0);
    expect(smmu.commands).toBeGreaterThanOrEqual(smmu.invalidations!);
    // The mock: a permission fault, a translation fault and a page request; one page request.
    expect(mock.faults).toBe(3);
    expect(mock.pageRequests).toBe(1);
    expect(mock.iotlbHits + mock.iotlbMisses).toBe(mock.translations);
    // AMD-Vi: four DMAs (write, read back from the IOTLB, read-only page, unmapped IOVA), two faults.
    const amd = j.summary.find((s) => s.name === "amd0")!.counters;
    expect(amd).toMatchObject({ translations: 4, iotlbHits: 1, walks: 3, faults: 2, pageRequests: 0 });
    expect(amd.commands).toBeGreaterThanOrEqual(amd.invalidations!);
    expect(amd.invalidations).toBeGreaterThan(0);
    expect(j.trace["iommufd:object_destroy"]).toBeGreaterThan(0);
  });

  it("every example scenario passes", async () => {
    const files = readdirSync(examples).filter((f) => /\.(ya?ml|json)$/.test(f));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const f of files) {
      const r = await run("run", join(examples, f));
      expect({ f, code: r.code, err: r.err }).toEqual({ f, code: 0, err: "" });
    }
  });
});

describe("scenario files", () => {
  it("a bad file exits 2 naming each path and problem", async () => {
    const f = tmpFile(
      "bad.yaml",
      `${PREFIX}  - do: bind\n    devce: nic0\n  - do: frob\n  - do: map\n    ioas: a\n    iova: lots\n    size: 1MiB\n    as: r\n`,
    );
    const r = await run("run", f);
    expect(r.code).toBe(2);
    expect(r.err).toContain("steps[3].device: missing");
    expect(r.err).toContain("steps[3]: unknown field devce");
    expect(r.err).toMatch(/steps\[4\]\.do: unknown step kind "frob" \(one of: boot, /);
    expect(r.err).toMatch(/steps\[5\]\.iova: expected an integer.*\(got "lots"\)/);
    expect(r.out).toBe("");
  });

  it("YAML and JSON syntax errors, a missing file and an empty step list exit 2", async () => {
    expect((await run("run", tmpFile("x.yaml", "steps: [\n"))).err).toMatch(/not valid YAML/);
    expect((await run("run", tmpFile("x.json", "{nope"))).err).toMatch(/not valid JSON/);
    expect((await run("run", "/nonexistent/s.yaml")).code).toBe(2);
    expect((await run("run", tmpFile("e.yaml", "name: e\nsteps: []\n"))).err).toMatch(/steps:/);
  });

  it("a failing step stops the run, is named, and exits 1 (the machine is still torn down)", async () => {
    const f = tmpFile(
      "fail.yaml",
      `${PREFIX}  - do: bind\n    device: mock-dev0\n  - do: ioas-alloc\n    as: a\n  - do: attach\n    device: mock-dev0\n    pt: a\n  - do: dma\n    name: read of nothing\n    device: mock-dev0\n    op: read\n    iova: 0x1000000\n  - do: snapshot\n    label: never\n`,
    );
    const r = await run("run", f);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(
      /\[7\/9\] FAIL read of nothing: expected the read 4 bytes at 0x1000000 to complete: DMA read fault/,
    );
    expect(r.out).not.toContain("never");
    expect(r.err).toMatch(/step 7 \(read of nothing\) failed/);
  });

  it("a step with `expect` fails when the call succeeds or fails with another errno", async () => {
    const ok = tmpFile("e1.yaml", `${PREFIX}  - do: ioas-alloc\n    as: a\n    expect: ENOENT\n`);
    const r1 = await run("run", ok);
    expect(r1.code).toBe(1);
    expect(r1.err).toMatch(/expected ENOENT, but it succeeded/);
    const other = tmpFile(
      "e2.yaml",
      `${PREFIX}  - do: bind\n    device: mock-dev0\n  - do: bind\n    device: mock-dev0\n    expect: EBUSY\n`,
    );
    expect((await run("run", other)).code).toBe(1);
  });

  it("a warning anywhere in the run makes the teardown fail with the diagnostic (exit 1)", async () => {
    const r = await run("run", "--module", fixture("warning-module.mjs"));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/teardown.* failed: machine teardown found problems/s);
    expect(r.err).toContain("warning-fixture: a warning at module init");
  });
});

describe("modules", () => {
  it("--module loads a module file (default export) and a built-in by name; bad ones exit 2", async () => {
    const r = await run("run", "--json", "--module", fixture("quiet-module.mjs"), "--module", "iommufd");
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as { trace: Record<string, number> }).trace["fixture:init"]).toBe(1);
    const none = await run("run", "--module", fixture("not-a-module.mjs"));
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/exports no DriverModule or KernelModule/);
    expect((await run("run", "--module", "no-such-package-xyz")).err).toMatch(/cannot load module no-such-package-xyz/);
  });

  it("the built-in modules are drivers for every landed kind, then iommufd", () => {
    expect(BUILTIN_MODULES.map((m) => m.name)).toEqual([
      "mock-iommu",
      "arm-smmu-v3",
      "intel-iommu",
      "amd-iommu",
      "iommufd",
    ]);
  });
});

describe("trace", () => {
  it("--trace writes one JSON object per line with seq, event and step; the events of the scenario are there", async () => {
    const f = join(mkdtempSync(join(tmpdir(), "iommu-sim-trace-")), "t.jsonl");
    const r = await run("run", "--trace", f);
    expect(r.code).toBe(0);
    const lines = readFileSync(f, "utf8").trimEnd().split("\n");
    const recs = lines.map(
      (l) => JSON.parse(l) as { seq: number; event: string; step: number } & Record<string, unknown>,
    );
    recs.forEach((x, i) => {
      expect(x.seq).toBe(i + 1);
      expect(typeof x.step).toBe("number");
    });
    const of = (e: string) => recs.filter((x) => x.event === e);
    for (const e of [
      "iommu:probe_device",
      "iommu:attach_device_to_domain",
      "iommu:map",
      "iommu:unmap",
      "iommu:io_page_fault",
      "hw:command",
      "hw:fault",
      "hw:page_request",
      "iommufd:object_create",
      "iommufd:object_destroy",
    ]) {
      expect({ e, n: of(e).length > 0 }).toEqual({ e, n: true });
    }
    expect(of("hw:fault").find((x) => x.iommu === "smmu0")).toMatchObject({
      reason: "F_TRANSLATION",
      iova: "0x10400000",
    });
    expect(of("iommufd:object_destroy").filter((x) => x.tombstone === true)).toHaveLength(1);
    expect(of("iommu:probe_device").every((x) => x.step === 1)).toBe(true);
    expect(of("iommu:map")[0]).toMatchObject({ iova: expect.stringMatching(/^0x/), size: expect.any(Number) });
  });
});

describe("decoders agree with the hardware", () => {
  it("inspect's PA is where the device's DMA landed, for the mock, the nested SMMUv3, VT-d and AMD-Vi", async () => {
    const sc = parseScenario(DEFAULT_SCENARIO);
    const cut = sc.steps.findIndex((s) => s.do === "snapshot");
    const steps = [...sc.steps.slice(0, cut)];
    const checks: { device: string; iova: number }[] = [
      { device: "mock-dev0", iova: 0x1000040 },
      { device: "smmu-dma0", iova: 0x10000020 },
      { device: "mock-dev1", iova: 0x1200000 },
      { device: "xhci0", iova: 0x20000100 },
      { device: "amd-nic0", iova: 0x30000200 },
    ];
    for (const c of checks) steps.push({ do: "inspect", ...c });
    const r = await runScenario(
      { ...sc, steps },
      {
        platform: defaultPlatform(),
        modules: BUILTIN_MODULES,
        io: { out: () => {}, err: () => {} },
        beforeTeardown: (ctx) => {
          for (const c of checks) {
            const insp = ctx.inspections.find((i) => i.device === c.device && i.iova === c.iova)!;
            const pa = (insp.data as { result: { pa: number } }).result.pa;
            // The bytes the scenario's DMA wrote (the default pattern) are at the decoded PA.
            expect([...ctx.m.memory.readBytes(pa, 4)]).toEqual([0xa5, 0x5a, 0xc3, 0x3c]);
          }
        },
      },
    );
    expect(r.failed?.message).toBeUndefined();
  });

  it("inspect prints the STE, CD and both stages' levels; a fault is reported as such", async () => {
    const r = await run("inspect", "--device", "smmu-dma0", "--iova", "0x10000010");
    expect(r.code).toBe(0);
    for (const l of ["STE", "Config=nested", "CD (IPA 0x40000000)", "ASID=5", "S1 L3 page", "S2 L3 page", "→ PA 0x"]) {
      expect(r.out).toContain(l);
    }
    // VT-d (scalable mode, a first-stage domain): root, context, PASID directory and entry, the four x86-64 levels.
    const v = await run("inspect", "--device", "xhci0", "--iova", "0x20000104");
    expect(v.code).toBe(0);
    for (const l of [
      "SM root entry",
      "SM context",
      "PASID dir",
      "PASID entry",
      "PGTT=first-stage",
      "L4 table",
      "L1 4K page",
      "→ PA 0x",
    ]) {
      expect(v.out).toContain(l);
    }
    const vf = await run("inspect", "--device", "xhci0", "--iova", "0x20100000");
    expect(vf.out).toContain("→ fault: sm fs not present (reason 0x71): level 1");
    const m = await run("inspect", "--device", "mock-dev0", "--iova", "0x1800000", "--json");
    const j = JSON.parse(m.out) as { levels: { name: string }[]; result: { fault?: string } };
    expect(j.levels[0]!.name).toBe("device entry");
    expect(j.result.fault).toBe("translation fault");
  });

  it("inspect on AMD-Vi prints the DTE and each v1 level; the read-only page and an unmapped IOVA", async () => {
    const r = await run("inspect", "--device", "amd-nic0", "--iova", "0x30000200");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/amd-nic0 → amd0 \(amd\), requester ID 0x8, IOVA 0x30000200/);
    expect(r.out).toMatch(
      /DTE +@ 0x[0-9a-f]+ +(0x[0-9a-f]{16} ?){4}\n.*V=true TV=true Mode=4 HostPtRoot=0x[0-9a-f]+ IR=true IW=true DomainID=\d+/,
    );
    for (const l of ["L4 PDE", "L3 PDE", "L2 PDE", "NextLevel=3", "L1 page", "→ PA 0x"]) expect(r.out).toContain(l);
    const ro = JSON.parse((await run("inspect", "--device", "amd-nic0", "--iova", "0x30040000", "--json")).out) as {
      levels: { name: string; fields: Record<string, unknown> }[];
      result: { perm?: string; size?: number };
    };
    expect(ro.levels.map((l) => l.name)).toEqual(["DTE", "L4 PDE", "L3 PDE", "L2 PDE", "L1 page"]);
    expect(ro.levels[4]!.fields).toMatchObject({ PR: true, IR: true, IW: false });
    expect(ro.result).toMatchObject({ perm: "r-", size: 4096 });
    const miss = JSON.parse((await run("inspect", "--device", "amd-nic0", "--iova", "0x30100000", "--json")).out) as {
      result: { fault?: string };
    };
    expect(miss.result.fault).toBe("IO_PAGE_FAULT: L1 entry not present");
  });
});

describe("colour", () => {
  it("only on a terminal, never with NO_COLOR", async () => {
    const esc = "\u001b[32m"; // green "ok"
    expect((await runWith({ isTTY: true, env: {} }, "run")).out).toContain(esc);
    expect((await runWith({ isTTY: true, env: { NO_COLOR: "1" } }, "run")).out).not.toContain(esc);
    expect((await runWith({ isTTY: false, env: {} }, "run")).out).not.toContain(esc);
  });
});

describe("progress", () => {
  it("on a terminal the running step (and each device boot probes) is a status line rewritten in place", async () => {
    const tty = (await runWith({ isTTY: true, env: { NO_COLOR: "1" } }, "run", join(examples, "basic-mock.yaml"))).out;
    const CLEAR = "\r\u001b[2K"; // carriage return, erase the line
    expect(tty).toContain(`${CLEAR}[ 1/15] boot … probed mock-dev0 (1)`);
    expect(tty).toContain(`${CLEAR}[ 1/15] ok   boot:`);
    const plain = (await run("run", join(examples, "basic-mock.yaml"))).out;
    expect(plain).not.toContain("\r");
    expect(plain).not.toContain("probed mock-dev0 (1)");
    expect(plain.split("\n").filter((l) => /^\[ ?\d+\/15\] ok /.test(l))).toHaveLength(15);
  });
});

describe("inspect at a chosen point", () => {
  it("--scenario and --at stop the scenario at that snapshot; an unknown label is a usage error", async () => {
    const f = join(examples, "basic-mock.yaml");
    const r = await run("inspect", "--device", "mock-dev0", "--iova", "0x1000100", "--scenario", f, "--at", "mapped");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/L0 leaf .*\n.*R=true W=true/);
    expect(r.out).toMatch(/→ PA 0x[0-9a-f]+ \(2 KiB page, rwx\)/);
    const bad = await run("inspect", "--device", "mock-dev0", "--iova", "0x1000100", "--scenario", f, "--at", "nope");
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/no snapshot step labelled "nope"/);
    const noDecoder = await run("inspect", "--device", "uart0", "--iova", "0x1000");
    expect(noDecoder.code).toBe(1);
    expect(noDecoder.err).toMatch(/uart0 has no IOMMU/);
  });
});
