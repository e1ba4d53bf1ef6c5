/**
 * Domains: the default domain, paging attach/replace/detach, identity and blocked, PASID attach/replace, and every
 * configuration transition in both orders with a device DMA checked after each step (a driver that skips an entry
 * update because it "looks unchanged" fails here).
 * @linux __iommu_group_set_domain, iommu_attach_device_pasid, iommu_replace_device_pasid
 */
import {
  type Device,
  IOMMU_DOMAIN,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  iommuAttachDevicePasid,
  iommuDetachDevicePasid,
  iommuDeviceClaimDmaOwner,
  iommuDeviceReleaseDmaOwner,
  iommuDomainFree,
  iommuGroupReplaceDomain,
  iommuMap,
  iommuPagingDomainAllocFlags,
  iommuReplaceDevicePasid,
  iommuUnmap,
  KernelError,
} from "@iommu-sim/core";
import { check, hex } from "../errors.js";
import { type DmaOutcome, type Rig, withRig } from "../rig.js";
import type { ConformanceTarget } from "../target.js";
import type { ConformanceCheck } from "./types.js";

const RW = IOMMU_READ | IOMMU_WRITE;

function show(o: DmaOutcome): string {
  return o === "fault" ? "a fault" : `byte ${hex(o[0]!)}`;
}

/** The granule-aligned IOVA the domain checks map, inside the claimed window. */
function windowIova(t: ConformanceTarget): number {
  const g = Math.max(t.caps.pageSizes[0]!, 4096);
  return Math.ceil(t.caps.iova.base / g) * g;
}

function opsOf(rig: Rig) {
  return rig.target.driver.driverFor(rig.m)!.ops;
}

/** A paging domain for `dev` mapping the window IOVA to a fresh page filled with `fill`. */
async function pagingWith(rig: Rig, dev: Device, fill: number, flags = 0): Promise<IommuDomain> {
  const d = await iommuPagingDomainAllocFlags(dev, flags);
  iommuMap(d, windowIova(rig.target), rig.page(fill), 4096, RW);
  return d;
}

function freePaging(rig: Rig, d: IommuDomain): void {
  iommuUnmap(d, windowIova(rig.target), 4096);
  iommuDomainFree(d);
}

const defaultDomain: ConformanceCheck = {
  id: "domains/default",
  title: "the default domain translates (DMA to an unmapped IOVA faults) or is identity, and is attached",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const g = rig.group(rig.dev(target.devices.primary));
      const d = g.defaultDomain!;
      const types: number[] = [IOMMU_DOMAIN.DMA, IOMMU_DOMAIN.DMA_FQ, IOMMU_DOMAIN.IDENTITY];
      check(types.includes(d.type), `default domain type ${d.type} is neither DMA, DMA_FQ nor IDENTITY`);
      if (d.type !== IOMMU_DOMAIN.IDENTITY) {
        const o = rig.read(target.devices.primary, windowIova(target), 4);
        check(o === "fault", `DMA through an empty default domain gave ${show(o)}, not a fault`);
      }
    }),
};

const attachReplace: ConformanceCheck = {
  id: "domains/attach-replace-detach",
  title: "paging domains attach, replace each other and detach back to the default domain, DMA following each",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.devices.primary;
      const dev = rig.dev(name);
      const g = rig.group(dev);
      const iova = windowIova(target);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const a = await pagingWith(rig, dev, 0xa1);
      const b = await pagingWith(rig, dev, 0xb2);
      await iommuGroupReplaceDomain(g, a);
      let o = rig.read(name, iova, 1);
      check(o !== "fault" && o[0] === 0xa1, `after attaching domain A, DMA gave ${show(o)}, want 0xa1`);
      await iommuGroupReplaceDomain(g, b);
      o = rig.read(name, iova, 1);
      check(o !== "fault" && o[0] === 0xb2, `after replacing A by B, DMA gave ${show(o)}, want 0xb2 (stale A?)`);
      // The secondary device stays on its default domain.
      o = rig.read(target.devices.secondary, iova, 1);
      check(o === "fault" || g.defaultDomain?.type === IOMMU_DOMAIN.IDENTITY, "another group's device saw domain B");
      await iommuDeviceReleaseDmaOwner(dev);
      check(g.domain === g.defaultDomain, "releasing DMA ownership did not restore the default domain");
      o = rig.read(name, iova, 1);
      check(o === "fault" || g.defaultDomain?.type === IOMMU_DOMAIN.IDENTITY, `after detach, DMA gave ${show(o)}`);
      freePaging(rig, a);
      freePaging(rig, b);
    }),
};

const identity: ConformanceCheck = {
  id: "domains/identity",
  title: "the identity domain lets DMA reach PA = IOVA",
  applies: (t) => (t.caps.identity ? undefined : "identity domains not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.devices.primary;
      const dev = rig.dev(name);
      const id = opsOf(rig).identityDomain;
      check(id !== undefined, "identity claimed but ops.identityDomain is missing");
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      await iommuGroupReplaceDomain(rig.group(dev), id);
      const pa = rig.page(0x1d);
      const o = rig.read(name, pa + 8, 1);
      check(o !== "fault" && o[0] === 0x1d, `identity DMA to ${hex(pa)} gave ${show(o)}`);
      check(rig.write(name, pa + 16, new Uint8Array([0x5a])), "identity DMA write faulted");
      check(rig.m.memory.readBytes(pa + 16, 1)[0] === 0x5a, "identity DMA write did not land at PA = IOVA");
      await iommuDeviceReleaseDmaOwner(dev);
    }),
};

const blocked: ConformanceCheck = {
  id: "domains/blocked",
  title: "the blocked domain refuses every DMA, reads and writes",
  applies: (t) => (t.caps.blocked ? undefined : "blocked domains not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.devices.primary;
      const dev = rig.dev(name);
      const bl = opsOf(rig).blockedDomain;
      check(bl !== undefined, "blocked claimed but ops.blockedDomain is missing");
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const a = await pagingWith(rig, dev, 0xa1);
      await iommuGroupReplaceDomain(rig.group(dev), a);
      await iommuGroupReplaceDomain(rig.group(dev), bl);
      const pa = rig.page(0x1d);
      for (const iova of [windowIova(target), pa]) {
        const o = rig.read(name, iova, 1);
        check(o === "fault", `blocked: DMA read at ${hex(iova)} gave ${show(o)}`);
        check(!rig.write(name, iova, new Uint8Array([1])), `blocked: DMA write at ${hex(iova)} completed`);
      }
      await iommuDeviceReleaseDmaOwner(dev);
      freePaging(rig, a);
    }),
};

const pasid: ConformanceCheck = {
  id: "domains/pasid",
  title: "paging domains attach to and replace at PASIDs, independent of the RID and of each other",
  applies: (t) => (t.caps.pasid ? undefined : "PASID not claimed"),
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const { device: name, pasids } = target.caps.pasid!;
      const dev = rig.dev(name);
      const [p1, p2] = [pasids[0]!, pasids[1] ?? pasids[0]! + 1];
      const iova = windowIova(target);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const a = await pagingWith(rig, dev, 0xa1);
      const b = await pagingWith(rig, dev, 0xb2);
      await iommuAttachDevicePasid(a, dev, p1, { domain: undefined });
      let o = rig.read(name, iova, 1, p1);
      check(o !== "fault" && o[0] === 0xa1, `PASID ${p1} on A: DMA gave ${show(o)}`);
      o = rig.read(name, iova, 1, p2);
      check(o === "fault", `PASID ${p2} (not attached) gave ${show(o)}`);
      o = rig.read(name, iova, 1);
      check(o !== "fault" ? o[0] !== 0xa1 : true, "a DMA without PASID reached PASID's domain A");
      await iommuAttachDevicePasid(b, dev, p2);
      await iommuReplaceDevicePasid(b, dev, p1, { domain: undefined });
      o = rig.read(name, iova, 1, p1);
      check(o !== "fault" && o[0] === 0xb2, `after replacing PASID ${p1} A→B, DMA gave ${show(o)}`);
      await iommuDetachDevicePasid(b, dev, p1);
      o = rig.read(name, iova, 1, p1);
      check(o === "fault", `after detaching PASID ${p1}, DMA gave ${show(o)}`);
      o = rig.read(name, iova, 1, p2);
      check(o !== "fault" && o[0] === 0xb2, `detaching PASID ${p1} disturbed PASID ${p2}: ${show(o)}`);
      await iommuDetachDevicePasid(b, dev, p2);
      await iommuDeviceReleaseDmaOwner(dev);
      freePaging(rig, a);
      freePaging(rig, b);
    }),
};

// ---- transitions --------------------------------------------------------------------------------------------

type RidKind = "blocked" | "identity" | "pagingA" | "pagingB" | "nested";
interface Config {
  name: string;
  rid: RidKind;
  /** A paging domain at the PASID (C), or none. */
  pasid?: "pagingC";
}

function configsFor(t: ConformanceTarget): Config[] {
  const rids: RidKind[] = ["pagingA", "pagingB"];
  if (t.caps.blocked) rids.unshift("blocked");
  if (t.caps.identity) rids.unshift("identity");
  if (t.caps.nested) rids.push("nested");
  const out: Config[] = rids.map((rid) => ({ name: rid, rid }));
  if (t.caps.pasid) {
    for (const rid of rids) if (rid !== "pagingB") out.push({ name: `pasid-paging+rid-${rid}`, rid, pasid: "pagingC" });
  }
  return out;
}

const transitions: ConformanceCheck = {
  id: "domains/transitions",
  title: "every configuration transition, in both orders, takes effect for DMA at once",
  applies: () => undefined,
  run: ({ target }) =>
    withRig(target, {}, async (rig) => {
      const name = target.caps.pasid?.device ?? target.devices.primary;
      const pasidNo = target.caps.pasid?.pasids[0];
      const dev = rig.dev(name);
      const g = rig.group(dev);
      const iova = windowIova(target);
      const ops = opsOf(rig);
      await iommuDeviceClaimDmaOwner(dev, "testkit");
      const a = await pagingWith(rig, dev, 0xa1);
      const b = await pagingWith(rig, dev, 0xb2);
      const c = await pagingWith(rig, dev, 0xc3);
      let parent: IommuDomain | undefined;
      let nested: IommuDomain | undefined;
      if (target.caps.nested) {
        parent = await pagingWith(rig, dev, 0xe5, target.caps.nested.parentFlags);
        nested = await target.caps.nested.alloc(rig.m, dev, parent);
      }
      const idPa = rig.page(0x1d);
      const ridDomain = (k: RidKind): IommuDomain =>
        ({
          blocked: ops.blockedDomain!,
          identity: ops.identityDomain!,
          pagingA: a,
          pagingB: b,
          nested: nested!,
        })[k];
      let pasidOn: IommuDomain | undefined;
      let rid: RidKind | undefined;
      const refusals: string[] = [];
      // Drivers may refuse some combinations (as Linux does: SMMUv3 keeps PASIDs off a nested or stage-2 RID with
      // EINVAL/EBUSY); a refusal must leave the previous configuration working, which the DMA check then sees.
      const tryStep = async (what: string, fn: () => Promise<void>): Promise<boolean> => {
        try {
          await fn();
          return true;
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (!(e instanceof KernelError) || !["EINVAL", "EBUSY", "EOPNOTSUPP"].includes(code ?? "")) throw e;
          refusals.push(`${what}: ${code}`);
          return false;
        }
      };
      const apply = async (cfg: Config): Promise<Config> => {
        if (!cfg.pasid && pasidOn) {
          await iommuDetachDevicePasid(pasidOn, dev, pasidNo!);
          pasidOn = undefined;
        }
        if (await tryStep(`RID → ${cfg.rid}`, () => iommuGroupReplaceDomain(g, ridDomain(cfg.rid)))) rid = cfg.rid;
        if (cfg.pasid && !pasidOn && pasidNo !== undefined) {
          if (await tryStep(`PASID with RID ${rid}`, () => iommuAttachDevicePasid(c, dev, pasidNo))) pasidOn = c;
        }
        const now: Config = { name: pasidOn ? `pasid-paging+rid-${rid}` : `${rid}`, rid: rid! };
        if (pasidOn) now.pasid = "pagingC";
        return now;
      };
      const verify = (cfg: Config, step: string) => {
        const at = (o: DmaOutcome) => show(o);
        const o = rig.read(name, iova, 1);
        const oid = rig.read(name, idPa, 1);
        const want: Record<RidKind, (x: DmaOutcome, y: DmaOutcome) => boolean> = {
          blocked: (x, y) => x === "fault" && y === "fault",
          identity: (_x, y) => y !== "fault" && y[0] === 0x1d,
          pagingA: (x) => x !== "fault" && x[0] === 0xa1,
          pagingB: (x) => x !== "fault" && x[0] === 0xb2,
          nested: (x) => x === "fault" || x[0] === 0xe5,
        };
        check(
          want[cfg.rid](o, oid),
          `${step}: RID DMA in config ${cfg.name} gave ${at(o)} at the window, ${at(oid)} at PA=IOVA`,
        );
        if (pasidNo !== undefined) {
          const op = rig.read(name, iova, 1, pasidNo);
          if (cfg.pasid) check(op !== "fault" && op[0] === 0xc3, `${step}: PASID DMA in ${cfg.name} gave ${at(op)}`);
          else
            check(op === "fault" || cfg.rid === "identity", `${step}: PASID DMA with no PASID domain gave ${at(op)}`);
        }
      };
      const cfgs = configsFor(target);
      for (const from of cfgs) {
        for (const to of cfgs) {
          if (from === to) continue;
          const was = await apply(from);
          verify(was, `entering ${from.name}`);
          const now = await apply(to);
          verify(now, `${was.name} → ${to.name}${now.name !== to.name ? ` (refused: now ${now.name})` : ""}`);
        }
      }
      if (pasidOn) await iommuDetachDevicePasid(pasidOn, dev, pasidNo!);
      const plain = refusals.filter((r) => !/nested|PASID/.test(r));
      check(plain.length === 0, `refused transitions between plain RID configurations: ${plain.join("; ")}`);
      await iommuDeviceReleaseDmaOwner(dev);
      if (nested) iommuDomainFree(nested);
      for (const d of [a, b, c, parent]) if (d) freePaging(rig, d);
    }),
};

/** The domain checks. */
export const domainChecks: readonly ConformanceCheck[] = [
  defaultDomain,
  attachReplace,
  identity,
  blocked,
  pasid,
  transitions,
];
