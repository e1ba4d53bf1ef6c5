/**
 * The strict-mode property a vendor package runs on its hardware model with tiny caches: random map, unmap,
 * replace (paging domains, and the identity and blocked domains when the target gives them), realloc, PASID attach,
 * replace and detach (when the target names a PASID) and DMA sequences through the driver, with every DMA compared to a plain model of what the
 * attached domain maps, and the model's stale-hit count read at the end. The VT-d and AMD packages' strict tests
 * were copies of this sequence runner; they now share it (the conformance suite's invalidation/strict-random check
 * is the driver-independent form).
 */
import {
  DmaFault,
  IOMMU_READ,
  IOMMU_WRITE,
  type IommuDomain,
  type IommuGroup,
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
  type Machine,
} from "@iommu-sim/core";
import type * as FastCheck from "fast-check";

/** One step of a strict-mode sequence. */
export type StrictOp =
  | { k: "map"; d: number; page: number; buf: number; big: boolean }
  | { k: "unmap"; d: number; page: number }
  /** `d` = STRICT_IDENTITY / STRICT_BLOCKED: the driver's identity / blocked domain. */
  | { k: "replace"; d: number }
  | { k: "realloc"; d: number }
  | { k: "pasid"; d: number }
  | { k: "unpasid" }
  | { k: "dma"; page: number };

/** Domains and model pages a sequence works on. */
export const STRICT_DOMAINS = 3;
export const STRICT_PAGES = 6;
/** Replace targets beyond the paging domains' slots. */
export const STRICT_IDENTITY = STRICT_DOMAINS;
export const STRICT_BLOCKED = STRICT_DOMAINS + 1;
const BASE = 0x100_0000;
const BIG = 2 ** 21;

/**
 * The fast-check arbitrary of one step (DMA weighted double), built with the caller's fast-check. `special`: also
 * replace with the identity and blocked domains; `pasid`: also attach, replace and detach a PASID.
 * @linux none: a property-test generator
 */
export function strictOpArb(
  fc: Pick<typeof FastCheck, "oneof" | "record" | "constant" | "nat" | "boolean">,
  opts: { special?: boolean; pasid?: boolean } = {},
): FastCheck.Arbitrary<StrictOp> {
  const d = () => fc.nat(STRICT_DOMAINS - 1);
  const page = () => fc.nat(STRICT_PAGES - 1);
  const arbs: FastCheck.Arbitrary<StrictOp>[] = [
    fc.record({ k: fc.constant("map" as const), d: d(), page: page(), buf: fc.nat(3), big: fc.boolean() }),
    fc.record({ k: fc.constant("unmap" as const), d: d(), page: page() }),
    fc.record({ k: fc.constant("replace" as const), d: opts.special ? fc.nat(STRICT_BLOCKED) : d() }),
    fc.record({ k: fc.constant("realloc" as const), d: d() }),
    fc.record({ k: fc.constant("dma" as const), page: page() }),
    fc.record({ k: fc.constant("dma" as const), page: page() }),
  ];
  if (opts.pasid) {
    arbs.push(fc.record({ k: fc.constant("pasid" as const), d: d() }));
    arbs.push(fc.record({ k: fc.constant("unpasid" as const) }));
  }
  return fc.oneof(...arbs) as FastCheck.Arbitrary<StrictOp>;
}

/** Each model page is 4 KiB or, for "big" maps, a 2 MiB leaf of its own 2 MiB-aligned region. */
export function strictIova(page: number, big: boolean): number {
  return big ? BASE * 16 + page * BIG : BASE + page * 4096;
}

/** Where a strict sequence runs. */
export interface StrictSequenceTarget {
  m: Machine;
  /** The endpoint whose group the domains are attached to. */
  device: string;
  /** Allocation flags of domain slot `i` (e.g. a nest parent in one slot). Default 0. */
  flagsOf?(i: number): number;
  /** The hardware model's stale-hit count (its strict mode's reports). */
  staleReports(): number;
  /** The driver's identity and blocked domains, for "replace" steps naming them (else those steps are skipped). */
  identity?: IommuDomain;
  blocked?: IommuDomain;
  /** The PASID "pasid" steps attach domains at (else they are skipped); DMA is then checked at it too. */
  pasid?: number;
}

/**
 * Run `ops` on `t`: claim the device, allocate the domains and four buffers, apply each step, compare each DMA with
 * the model (4 KiB and 2 MiB views of the page), then undo everything. Returns the stale-hit count seen before the
 * undo and the DMA mismatches.
 * @linux none: the strict-mode property of the vendor packages
 */
export async function runStrictSequence(
  ops: readonly StrictOp[],
  t: StrictSequenceTarget,
): Promise<{ stale: number; mismatches: string[] }> {
  const { m } = t;
  const flagsOf = t.flagsOf ?? (() => 0);
  const dev = m.driverCore.deviceFor(t.device)!;
  const group = dev.iommuGroup as IommuGroup;
  await iommuDeviceClaimDmaOwner(dev, "test");
  const domains: IommuDomain[] = [];
  for (let i = 0; i < STRICT_DOMAINS; i++) domains.push(await iommuPagingDomainAllocFlags(dev, flagsOf(i)));
  const bufs = [0, 1, 2, 3].map((i) => {
    const pa = m.pages.allocPages(9, "test-buf");
    m.memory.fill(pa, 4096, 0x10 + i);
    return pa;
  });
  const model = domains.map(() => new Map<number, { buf: number; big: boolean }>());
  let cur = -1;
  let curPasid = -1;
  const ep = m.device(t.device);
  const mismatches: string[] = [];
  const unmapAll = async (i: number) => {
    for (const [p, v] of model[i]!) await iommuUnmap(domains[i]!, strictIova(p, v.big), v.big ? BIG : 4096);
    model[i]!.clear();
  };
  for (const op of ops) {
    if (op.k === "map") {
      if (model[op.d]!.has(op.page)) continue;
      const rw = IOMMU_READ | IOMMU_WRITE;
      await iommuMap(domains[op.d]!, strictIova(op.page, op.big), bufs[op.buf]!, op.big ? BIG : 4096, rw);
      model[op.d]!.set(op.page, { buf: op.buf, big: op.big });
    } else if (op.k === "unmap") {
      const v = model[op.d]!.get(op.page);
      if (!v) continue;
      await iommuUnmap(domains[op.d]!, strictIova(op.page, v.big), v.big ? BIG : 4096);
      model[op.d]!.delete(op.page);
    } else if (op.k === "realloc") {
      // Free a detached domain and allocate a new one: its domain ID may be reused at once.
      if (op.d === cur || op.d === curPasid) continue;
      await unmapAll(op.d);
      iommuDomainFree(domains[op.d]!);
      domains[op.d] = await iommuPagingDomainAllocFlags(dev, flagsOf(op.d));
    } else if (op.k === "replace") {
      const d = op.d === STRICT_IDENTITY ? t.identity : op.d === STRICT_BLOCKED ? t.blocked : domains[op.d]!;
      if (!d) continue;
      await iommuGroupReplaceDomain(group, d);
      cur = op.d;
    } else if (op.k === "pasid") {
      if (t.pasid === undefined || op.d === curPasid) continue;
      if (curPasid < 0) await iommuAttachDevicePasid(domains[op.d]!, dev, t.pasid);
      else await iommuReplaceDevicePasid(domains[op.d]!, dev, t.pasid, { domain: undefined });
      curPasid = op.d;
    } else if (op.k === "unpasid") {
      if (t.pasid === undefined || curPasid < 0) continue;
      await iommuDetachDevicePasid(domains[curPasid]!, dev, t.pasid);
      curPasid = -1;
    } else {
      for (const pasid of t.pasid === undefined ? [-1] : [-1, t.pasid]) {
        const on = pasid < 0 ? cur : curPasid;
        for (const big of [false, true]) {
          const iova = strictIova(op.page, big) + 8;
          let exp: number | "fault";
          if (on === STRICT_IDENTITY) exp = m.memory.readBytes(iova, 1)[0]!;
          else {
            const e = on < 0 || on === STRICT_BLOCKED ? undefined : model[on]!.get(op.page);
            exp = e && e.big === big ? 0x10 + e.buf : "fault";
          }
          let got: number | "fault";
          try {
            got = ep.dmaRead(iova, 1, pasid < 0 ? undefined : { pasid })[0]!;
          } catch (err) {
            if (!(err instanceof DmaFault)) throw err;
            got = "fault";
          }
          if (got !== exp)
            mismatches.push(`${JSON.stringify(op)} big=${big} pasid=${pasid} on ${on}: got ${got}, want ${exp}`);
        }
      }
    }
  }
  const stale = t.staleReports();
  if (curPasid >= 0 && t.pasid !== undefined) await iommuDetachDevicePasid(domains[curPasid]!, dev, t.pasid);
  await iommuDeviceReleaseDmaOwner(dev);
  for (let i = 0; i < STRICT_DOMAINS; i++) {
    await unmapAll(i);
    iommuDomainFree(domains[i]!);
  }
  for (const pa of bufs) m.pages.freePages(pa, 9);
  return { stale, mismatches };
}
