/**
 * The mock hardware model as the in-run baseline of another model's translation bench: "hit ≤ 1.5× the mock's
 * hit, walk ≤ 2× the mock's walk" is measured against this, in the same process and run, with the same IOVAs.
 *
 * The mock's granule is 2 KiB, so for a range of larger pages the mock maps the first 2 KiB of each page (a 4-level
 * table written plainly with the mock's field definitions, no engine, no driver) and {@link MockBaseline.translateAll}
 * moves each IOVA into that first 2 KiB (once per IOVA array, before timing): the same page, the same table slots,
 * the same IOTLB set pressure. The
 * VT-d and AMD-Vi benches import it by relative path, as they import core's harness.ts and baselines.ts.
 */
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import { BASE, CR, CTX, CTX_MODE, fieldPrep, MockIommuHw, PTE, REG } from "../src/index.js";

/** The mock model set up over a range, and its translation loop. */
export interface MockBaseline {
  readonly hw: MockIommuHw;
  /** Translate every IOVA (moved into its page's first 2 KiB) through the mock; returns the sum of the PAs. */
  translateAll(iovas: Float64Array): number;
}

const TWO_32 = 4294967296;
const MPAGE = 2048;
const RID = 1;

/**
 * Map `range.pages` pages of `range.pageSize` bytes from `range.base` to `basePa` in a fresh mock model (4 GiB of
 * sparse memory, an IOTLB of `tlbEntries`), enabled, with requester ID 1 translating; a self-check translates one
 * page.
 */
export function mockModelBaseline(
  range: { base: number; pages: number; pageSize: number },
  basePa: number,
  tlbEntries = 4096,
): MockBaseline {
  const mem = new PhysicalMemory({ size: 4 * 2 ** 30 });
  const hw = new MockIommuHw({ name: "mock", memory: mem, diag: new Diagnostics(), options: { tlbEntries } });
  let bump = 0x1000_0000;
  const alloc = () => {
    const pa = bump;
    bump += 4096;
    return pa;
  };
  const root = alloc();
  const tableBits = fieldPrep(PTE.V, 1) | fieldPrep(PTE.T, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1);
  const leafBits = fieldPrep(PTE.V, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1);
  const map = (iova: number, pa: number) => {
    let table = root;
    for (let l = 3; l > 0; l--) {
      const e = table + (Math.floor(iova / 2 ** (11 + 9 * l)) % 512) * 8;
      let lo = mem.read32(e);
      if (lo === 0) {
        lo = (tableBits | alloc()) >>> 0;
        mem.write32(e, lo);
      }
      table = (lo & ~0xfff) >>> 0;
    }
    const e = table + (Math.floor(iova / MPAGE) % 512) * 8;
    mem.write32(e, (leafBits | (pa % TWO_32)) >>> 0);
    mem.write32(e + 4, Math.floor(pa / TWO_32));
  };
  for (let i = 0; i < range.pages; i++) map(range.base + i * range.pageSize, basePa + i * range.pageSize);
  const dt = alloc();
  mem.write32(dt + 32 * RID, fieldPrep(CTX.V, 1) | fieldPrep(CTX.MODE, CTX_MODE.TRANSLATE) | fieldPrep(CTX.LEVELS, 4));
  mem.write32(dt + 32 * RID + 4, fieldPrep(CTX.DID, 1));
  mem.write32(dt + 32 * RID + 8, root >>> 0);
  hw.write32(REG.DT_BASE_LO.offset, (dt >>> 0) | fieldPrep(BASE.LOG2SIZE, 4));
  hw.write32(REG.CR.offset, fieldPrep(CR.EN, 1));
  const req = newDmaRequest();
  req.requesterId = RID;
  const out = newDmaTranslation();
  // Each IOVA moved into its page's first 2 KiB once, outside the timed loop, so the loop is the mock's translate.
  const moved = new WeakMap<Float64Array, Float64Array>();
  const page = range.pageSize;
  const translateAll = (iovas: Float64Array): number => {
    let a = moved.get(iovas);
    if (!a) {
      a = iovas.map((iova) => iova - (iova % page) + (iova % MPAGE));
      moved.set(iovas, a);
    }
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      req.iova = a[i]!;
      hw.translate(req, out);
      sum += out.pa;
    }
    if (out.faultCode !== 0) throw new Error(`bench: mock fault ${out.faultReason}`);
    return sum;
  };
  req.iova = range.base + 5;
  hw.translate(req, out);
  if (out.faultCode !== 0 || out.pa !== basePa + 5) throw new Error(`mock baseline self-check: ${out.faultReason}`);
  return { hw, translateAll };
}
