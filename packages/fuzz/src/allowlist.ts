/**
 * Known findings, allowed by name until their fixes land. A campaign counts a finding that matches an entry as
 * "known" instead of failing, and an entry may keep the generator away from inputs that would only burn time
 * (multi-gigabyte allocations) while the bug is there.
 *
 * THIS LIST IS MEANT TO BE EMPTIED: each entry names the issue item that fixes it; delete the entry when the fix is
 * on main, and the CI campaign then guards the fix.
 * @linux none: syzkaller's "known bugs" suppressions
 */
import type { Finding } from "./executor.js";
import type { GenOptions } from "./generator.js";

/** One known finding. */
export interface KnownFinding {
  /** Short name, printed when it matches. */
  name: string;
  /** The issue item that fixes it. */
  issue: string;
  /** Whether a finding is this one. */
  match: (f: Finding) => boolean;
  /** Generator options to force while this entry is listed (to avoid slow, known inputs). */
  avoid?: Partial<GenOptions>;
}

/**
 * The known findings. Issue #11 items 1–7 and #10 item 2 were on this list when the fuzzer was written, and came
 * off it as their fixes landed on main (each entry's reproducer stopped reproducing; see test/known.test.ts).
 */
export const KNOWN_FINDINGS: KnownFinding[] = [
  // Found by this fuzzer (not in #11): VFIO_IOMMU_MAP_DMA with flags 0 makes an area mapped with IOMMU_CACHE only,
  // and the page table WARNs when it is mapped into a domain: at the MAP_DMA, or later when a device attaches and
  // the area is filled in (VFIO_DEVICE_ATTACH_IOMMUFD_PT, MOCK_DOMAIN, ...). Linux does the same walk
  // (vfio_compat.c iommufd_vfio_map_dma passes the prot through to iopt_map_user_pages, and generic_pt's
  // map_pages WARN_ONs on it), so whether to refuse it at the ioctl is the lead's call; see the fuzz report.
  {
    name: "vfio-map-dma-without-read-or-write-warns",
    issue: "new (fuzz report)",
    match: (f) => f.callName !== "IOMMU_IOAS_COPY" && /^warning:\w+:.*IOMMU_READ or IOMMU_WRITE/.test(f.signature),
  },
];

/** The entry a finding matches, if any. @linux none (syzkaller's suppression matching) */
export function knownFinding(f: Finding, list: readonly KnownFinding[] = KNOWN_FINDINGS): KnownFinding | undefined {
  return list.find((k) => k.match(f));
}

/** Generator options forced by the listed entries. @linux none (fuzzer configuration) */
export function avoidOptions(list: readonly KnownFinding[] = KNOWN_FINDINGS): Partial<GenOptions> {
  const out: Partial<GenOptions> = {};
  for (const k of list) Object.assign(out, k.avoid ?? {});
  return out;
}
