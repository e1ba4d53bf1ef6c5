/**
 * Fail-nth sweeps over the VT-d driver's allocation sites, like the kernel's iommufd_fail_nth: the Nth allocation
 * from a point fails (ENOMEM), for every N until one run completes with no injection. Each run must unwind to a
 * consistent state (a device is in a group with a domain, or has no IOMMU at all; a failed attach leaves the
 * previous domain translating) and tear down clean (no pages, references or locks left).
 * - boot: the unit's bring-up (queue, root table, PRQ, IOPF queue) and every device probe (device info, PASID
 *   directory, group, default domain with its ID and tables);
 * - attach: paging domain allocation, attach at the RID and at a PASID, and mapping, in scalable mode (first- and
 *   second-stage domains) and legacy mode.
 */
import {
  createMachine,
  DmaFault,
  defaultPlatformInput,
  IOMMU_HWPT_ALLOC,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
  iommuAttachDevice,
  iommuAttachDevicePasid,
  iommuDetachDevice,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuUnmap,
  KernelError,
  type Machine,
  parsePlatform,
} from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import { createIntelIommuDriver, vtdHardwareKind } from "../../src/index.js";

const VTD_DEVICES = ["xhci0", "sata0", "nvme0"] as const;
const RW = IOMMU_READ | IOMMU_WRITE;
const LIMIT = 400;

async function machine(hw: Record<string, unknown>): Promise<Machine> {
  const input = defaultPlatformInput();
  const v = input.iommus!.find((i) => i.name === "vtd0")!;
  v.options = { ...(v.options ?? {}), ...hw };
  const mod = createIntelIommuDriver({ hardware: [vtdHardwareKind] });
  return createMachine({ platform: parsePlatform(input), modules: [mod], seed: 1 });
}

/** The core WARNs when a default domain's first attach fails (IOMMU_SET_DOMAIN_MUST_SUCCEED): the injection's doing. */
function acknowledgeInjected(m: Machine): void {
  m.diag.acknowledge({ kind: "warning", message: /fail|ENOMEM/ });
}

describe.each([
  ["scalable mode", {}],
  ["legacy mode", { scalableMode: false }],
] as const)("fail-nth, %s", (_name, hw) => {
  it("boot: every allocation of the unit's bring-up and the device probes fails once; each run unwinds", async () => {
    let n = 1;
    const failed = new Set<string>();
    for (; n < LIMIT; n++) {
      const m = await machine(hw);
      m.faults.failNth(n);
      await m.boot();
      const consumed = m.faults.nthConsumed;
      for (const s of m.faults.failedSites) failed.add(s);
      m.faults.reset();
      if (consumed) acknowledgeInjected(m);
      for (const name of VTD_DEVICES) {
        const dev = m.driverCore.deviceFor(name)!;
        const group = dev.iommuGroup as IommuGroup | undefined;
        // Probed completely, with a default domain, or not at all.
        if (group) expect(group.defaultDomain, `${name} at n=${n}`).toBeDefined();
      }
      // A clean run: every device has its group and nothing faulted.
      if (!consumed) for (const name of VTD_DEVICES) expect(m.driverCore.deviceFor(name)!.iommuGroup).toBeDefined();
      await m.teardown();
      if (!consumed) break;
    }
    expect(n).toBeLessThan(LIMIT);
    // The sweep reached the driver's own sites, not only the core's.
    for (const s of ["intel_iommu_root", "intel_iommu_probe_device", "intel_iommu_domain_alloc"])
      expect(failed).toContain(s);
    if (!("scalableMode" in hw)) expect(failed).toContain("intel_pasid_dir");
  }, 120_000);

  it("attach: domain allocation, RID and PASID attach and mapping unwind at every failure point", async () => {
    let n = 1;
    for (; n < LIMIT; n++) {
      const m = await machine(hw);
      await m.boot();
      const dev = m.driverCore.deviceFor("nvme0")!;
      const ep = m.device("nvme0");
      await iommuDeviceClaimDmaOwner(dev, "test");
      const sm = !("scalableMode" in hw);
      const pa = m.pages.allocPages(0, "test-buf");
      m.memory.fill(pa, 4096, 0x5a);
      const owned: IommuDomain[] = [];
      const maps: [IommuDomain, number, number][] = [];
      const map = (d: IommuDomain, iova: number, to: number, size: number) => {
        iommuMap(d, iova, to, size, RW);
        maps.push([d, iova, size]);
      };
      let attached: IommuDomain | undefined;
      let pasidAttached: IommuDomain | undefined;
      m.faults.failNth(n);
      let error: unknown;
      try {
        for (const flags of sm ? [0, IOMMU_HWPT_ALLOC.NEST_PARENT] : [0]) {
          const d = await iommuPagingDomainAllocFlags(dev, flags);
          owned.push(d);
          map(d, 0x20_0000, pa, 4096);
          map(d, 0x4000_0000, 0x1_0000_0000, 2 ** 21);
          if (attached) await iommuGroupReplaceDomain(dev.iommuGroup as IommuGroup, d);
          else await iommuAttachDevice(d, dev);
          attached = d;
        }
        if (sm) {
          const pd = await iommuPagingDomainAllocFlags(dev, IOMMU_HWPT_ALLOC.PASID);
          owned.push(pd);
          map(pd, 0x20_0000, pa, 4096);
          await iommuAttachDevicePasid(pd, dev, 7);
          pasidAttached = pd;
        }
      } catch (e) {
        error = e;
      }
      const consumed = m.faults.nthConsumed;
      m.faults.reset();
      if (consumed) {
        expect(error, `n=${n}`).toBeInstanceOf(KernelError);
        expect((error as KernelError).code).toBe("ENOMEM");
        acknowledgeInjected(m);
      } else expect(error).toBeUndefined();
      // Whatever succeeded translates; a failed attach left the device where it was (blocked while owned).
      const read = (opts?: { pasid: number }) => {
        try {
          return ep.dmaRead(0x20_0000, 1, opts)[0];
        } catch (e) {
          if (e instanceof DmaFault) return "fault";
          throw e;
        }
      };
      expect(read()).toBe(attached ? 0x5a : "fault");
      if (sm) expect(read({ pasid: 7 })).toBe(pasidAttached ? 0x5a : "fault");
      if (pasidAttached) await iommuDetachDevicePasid(pasidAttached, dev, 7);
      if (attached) await iommuDetachDevice(attached, dev);
      await iommuDeviceReleaseDmaOwner(dev);
      for (const [d, iova, size] of maps) expect(iommuUnmap(d, iova, size)).toBe(size);
      for (const d of owned) iommuDomainFree(d);
      m.pages.freePages(pa, 0);
      await m.teardown();
      if (!consumed) break;
    }
    expect(n).toBeGreaterThan(3);
    expect(n).toBeLessThan(LIMIT);
  }, 120_000);
});
