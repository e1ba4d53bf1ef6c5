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

const sig = (re: RegExp) => (f: Finding) => re.test(f.signature) || re.test(f.message);

/** The known findings on main when the fuzzer was written (issue #11 items 1–7, #10 item 2). */
export const KNOWN_FINDINGS: KnownFinding[] = [
  {
    name: "huge-length-map-allocates-by-length",
    issue: "#11 item 1",
    match: sig(
      /^exception:(IOMMU_IOAS_MAP|IOMMU_IOAS_MAP_FILE|IOMMU_IOAS_COPY|VFIO_IOMMU_MAP_DMA|IOMMU_TEST_OP_\w+):RangeError/,
    ),
    avoid: { hugeLengths: false },
  },
  {
    name: "huge-object-size-allocates-by-size",
    issue: "#11 item 2",
    match: sig(/^(slow|exception):IOMMU_\w+:(RangeError|call took)/),
    avoid: { hugeSizes: false },
  },
  {
    name: "ioas-copy-without-read-or-write-warns",
    issue: "#11 item 3",
    match: sig(/^warning:IOMMU_IOAS_COPY:.*IOMMU_READ or IOMMU_WRITE/),
  },
  {
    name: "access-replace-ioas-a-b-a-stale-entry",
    issue: "#11 item 4",
    match: (f) =>
      /iopt destroyed with accesses|access.*(stale|list)/i.test(f.message) ||
      (f.callName === "IOMMU_TEST_OP_ACCESS_REPLACE_IOAS" && f.kind === "warning"),
  },
  {
    name: "exit-with-pasid-attached-warns-and-leaks",
    issue: "#11 item 5",
    // The same exit path also reports the group left owned, the objects release could not free, and the leaked
    // page-table page of the HWPT it could not free.
    match: sig(
      /has PASIDs|iommufd_group freed while attached|emptied while owned or not on its default domain|release found objects it cannot free|page from mock_pgtable still allocated/,
    ),
  },
  {
    name: "integer-user-pointer-typeerror",
    issue: "#11 item 6",
    match: (f) => f.kind === "exception" && /TypeError/.test(f.message) && f.form === "uptr",
  },

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
