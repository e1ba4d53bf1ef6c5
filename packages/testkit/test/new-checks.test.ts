/**
 * The probe fail-nth, device-removal, HWPT_INVALIDATE and vEVENTQ checks have teeth: each fails on a target that
 * breaks what it checks (a probe leaking on its error path, a page response sent twice, an invalidation entry the
 * driver refuses, an event that never comes), with a message naming what went wrong.
 */
import type { Device, IommuOps, Machine } from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import { amdTarget, type ConformanceTarget, mockTarget, runConformance } from "../src/index.js";

async function runOne(target: ConformanceTarget, id: string) {
  const r = await runConformance({ drivers: [target], only: [id] });
  expect(r.results).toHaveLength(1);
  return r.results[0]!;
}

describe("new conformance checks", () => {
  it("probe/iommu-fail-nth passes on the mock and fails when a probe error path leaks a page", async () => {
    expect((await runOne(mockTarget(), "probe/iommu-fail-nth")).status).toBe("pass");
    const leaky: ConformanceTarget = {
      ...mockTarget(),
      async setup(m: Machine) {
        const f = m.faults;
        const shouldFail = f.shouldFail.bind(f);
        f.shouldFail = (site: string) => {
          const fail = shouldFail(site);
          if (fail && site.startsWith("mock_iommu")) m.pages.allocPages(0, "testkit-leak");
          return fail;
        };
      },
    };
    const r = await runOne(leaky, "probe/iommu-fail-nth");
    expect(r.status).toBe("fail");
    expect(r.detail).toMatch(/IOMMU probe failing at allocation \d+ \(mock_iommu\w*\) leaked 1 page/);
  });

  it("the device-removal checks fail when the driver answers a page request twice", async () => {
    const twice: ConformanceTarget = {
      ...mockTarget(),
      async setup(m: Machine) {
        await mockTarget().setup!(m);
        const ops = mockTarget().driver.driverFor(m)!.ops as IommuOps;
        const respond = ops.pageResponse!.bind(ops);
        ops.pageResponse = (dev: Device, evt, resp) => {
          respond(dev, evt, resp);
          respond(dev, evt, resp);
        };
      },
    };
    const removal = await runOne(twice, "faults/iopf-device-removal");
    expect(removal.status).toBe("fail");
    expect(removal.detail).toMatch(/answered group 11 \[.*\], want once with INVALID/);
    const race = await runOne(twice, "iommufd/fault-response-vs-removal");
    expect(race.status).toBe("fail");
    expect(race.detail).toMatch(/group 13 was answered 2 times, want exactly once/);
  });

  it("iommufd/hwpt-invalidate fails when valid entries are refused", async () => {
    const base = mockTarget();
    const inv = base.caps.viommu!.invalidate!;
    const t: ConformanceTarget = {
      ...base,
      caps: { ...base.caps, viommu: { ...base.caps.viommu!, invalidate: { ...inv, entry: inv.bad } } },
    };
    const r = await runOne(t, "iommufd/hwpt-invalidate");
    expect(r.status).toBe("fail");
    expect(r.detail).toMatch(/EINVAL/);
  });

  it("iommufd/veventq fails when the device's event never reaches the vEVENTQ", async () => {
    const base = mockTarget();
    const t: ConformanceTarget = {
      ...base,
      caps: {
        ...base.caps,
        viommu: { ...base.caps.viommu!, vevent: { ...base.caps.viommu!.vevent!, trigger: async () => {} } },
      },
    };
    const r = await runOne(t, "iommufd/veventq");
    expect(r.status).toBe("fail");
    expect(r.detail).toMatch(/holds 0 vEVENT\(s\) after two events/);
  });

  it("reports the new checks n/a, never pass, for capabilities not claimed", async () => {
    const base = mockTarget();
    const noInv: ConformanceTarget = {
      ...base,
      caps: { ...base.caps, viommu: { type: base.caps.viommu!.type, nestedData: base.caps.viommu!.nestedData } },
    };
    const r = await runConformance({ drivers: [noInv, "amd"], only: ["iommufd/hwpt-invalidate", "iommufd/veventq"] });
    const got = Object.fromEntries(r.results.map((x) => [`${x.driver} ${x.check}`, `${x.status}: ${x.detail}`]));
    expect(got).toEqual({
      "mock iommufd/hwpt-invalidate": "n/a: vIOMMU invalidation not claimed",
      "mock iommufd/veventq": "n/a: vEVENTQ not claimed",
      "amd iommufd/hwpt-invalidate": "n/a: vIOMMU invalidation not claimed",
      "amd iommufd/veventq": "n/a: vEVENTQ not claimed",
    });
    // AMD claims IOPF; without the claim the IOPF checks are n/a.
    const amd = amdTarget();
    const noIopf: ConformanceTarget = { ...amd, caps: { ...amd.caps, iopf: undefined } };
    for (const id of ["faults/iopf-device-removal", "iommufd/fault-response-vs-removal"]) {
      expect(await runOne(noIopf, id)).toMatchObject({ status: "n/a", detail: "PRI/IOPF not claimed" });
      expect(await runOne(amd, id)).toMatchObject({ status: "pass" });
    }
  });
});
