/**
 * The mock model baseline: the mock IOMMU's hardware model (drivers-mock) with a range mapped, called through its
 * `translate(req, out)` hot path. The vendor models' translation benches put it beside their own rows, in the same
 * process and run, with the same IOVAs: their targets are ratios to it ("an SMMUv3 TLB hit within 1.5× the mock's
 * hit"), so a busy machine moves both sides alike.
 *
 * The range is mapped linearly with the mock's own 2 KiB pages in a 4-level table written plainly with its field
 * definitions (no engine, no driver), so every IOVA of the range translates unchanged: a miss walks 4 levels, as
 * a 4-level walk of the vendor models does.
 */
import { Diagnostics, newDmaRequest, newDmaTranslation, PhysicalMemory } from "@iommu-sim/core";
import { BASE, CR, CTX, CTX_MODE, fieldPrep, MockIommuHw, PT_GRANULE_LG2, PTE, REG } from "@iommu-sim/drivers-mock";

const TWO_32 = 4294967296;
const MOCK_PAGE = 2 ** PT_GRANULE_LG2;
const LEVELS = 4;

/**
 * The mock model with a range mapped, and its translation loop.
 * @linux none: a benchmark baseline (the mock IOMMU of drivers/iommu/iommufd/selftest.c, as a hardware model)
 */
export interface MockModelBaseline {
  /** The model (for its counters). */
  hw: MockIommuHw;
  /** Translate every IOVA through the model: the sum of the output addresses (throws on a fault). */
  translateAll(iovas: Float64Array): number;
}

/**
 * A mock model (IOTLB of `tlbEntries`, 2-way) translating `range` (`pages` pages of `pageSize` bytes, a multiple
 * of 2 KiB, from IOVA `base`) to consecutive physical addresses from `paBase`, for requester ID 1.
 * @linux none: a benchmark baseline
 */
export function mockModelBaseline(
  range: { base: number; pages: number; pageSize: number },
  paBase: number,
  tlbEntries = 4096,
): MockModelBaseline {
  if (range.pageSize % MOCK_PAGE !== 0)
    throw new Error(`mock baseline: page size ${range.pageSize} is not 2 KiB-aligned`);
  const memory = new PhysicalMemory({ size: 4 * 2 ** 30 });
  const hw = new MockIommuHw({ name: "mock", memory, diag: new Diagnostics(), options: { tlbEntries } });
  let bump = 0x1000_0000;
  const alloc = () => {
    const pa = bump;
    bump += 4096;
    return pa;
  };
  const tableLo = (fieldPrep(PTE.V, 1) | fieldPrep(PTE.T, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1)) >>> 0;
  const leafLo = (fieldPrep(PTE.V, 1) | fieldPrep(PTE.R, 1) | fieldPrep(PTE.W, 1)) >>> 0;
  const root = alloc();
  const pages = (range.pages * range.pageSize) / MOCK_PAGE;
  for (let i = 0; i < pages; i++) {
    const iova = range.base + i * MOCK_PAGE;
    const pa = paBase + i * MOCK_PAGE;
    let table = root;
    for (let l = LEVELS - 1; l > 0; l--) {
      const e = table + (Math.floor(iova / 2 ** (PT_GRANULE_LG2 + 9 * l)) % 512) * 8;
      let lo = memory.read32(e);
      if (lo === 0) {
        lo = (tableLo | alloc()) >>> 0;
        memory.write32(e, lo);
      }
      table = (lo & ~0xfff) >>> 0;
    }
    const e = table + (Math.floor(iova / MOCK_PAGE) % 512) * 8;
    memory.write32(e, (leafLo | (pa % TWO_32)) >>> 0);
    memory.write32(e + 4, Math.floor(pa / TWO_32));
  }
  const rid = 1;
  const dt = alloc();
  memory.write32(
    dt + rid * 32,
    fieldPrep(CTX.V, 1) | fieldPrep(CTX.MODE, CTX_MODE.TRANSLATE) | fieldPrep(CTX.LEVELS, LEVELS),
  );
  memory.write32(dt + rid * 32 + 4, fieldPrep(CTX.DID, 1));
  memory.write32(dt + rid * 32 + 8, root >>> 0);
  hw.write32(REG.DT_BASE_LO.offset, (dt >>> 0) | fieldPrep(BASE.LOG2SIZE, 4));
  hw.write32(REG.CR.offset, fieldPrep(CR.EN, 1));

  const req = newDmaRequest();
  req.requesterId = rid;
  const out = newDmaTranslation();
  const translateAll = (iovas: Float64Array): number => {
    let sum = 0;
    for (let i = 0; i < iovas.length; i++) {
      req.iova = iovas[i]!;
      hw.translate(req, out);
      sum += out.pa;
    }
    if (out.faultCode !== 0) throw new Error(`mock baseline: fault ${out.faultReason}`);
    return sum;
  };
  // Self-check: the model agrees with the layout written above.
  const probe = range.base + Math.floor(range.pages / 3) * range.pageSize + 8;
  req.iova = probe;
  hw.translate(req, out);
  if (out.faultCode !== 0 || out.pa !== paBase + (probe - range.base)) {
    throw new Error(`mock baseline: ${probe} translated to ${out.pa} (${out.faultReason})`);
  }
  return { hw, translateAll };
}
