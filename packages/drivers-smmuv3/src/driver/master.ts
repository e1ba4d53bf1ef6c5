/**
 * Per-device driver state (a "master": a device's StreamIDs on one SMMU), its context-descriptor table (linear or
 * 2-level with 64 KiB leaves), and the CD writer.
 * @linux arm-smmu-v3.c: struct arm_smmu_master, struct arm_smmu_ctx_desc_cfg, arm_smmu_alloc_cd_tables,
 * arm_smmu_free_cd_tables, arm_smmu_get_cd_ptr, arm_smmu_alloc_cd_ptr, arm_smmu_write_cd_l1_desc,
 * arm_smmu_write_cd_entry, arm_smmu_clear_cd, arm_smmu_sync_cd
 */
import { type Device, type IommuDomain, kerr } from "@iommu-sim/core";
import { armSmmuGetCdUsed, armSmmuWriteEntry, type EntryQwords, type EntryWriter, newEntry } from "./entry-writer.js";
import { newCmdEnt } from "./queue.js";
import { CD, CD_L1_DESC, CMDQ_OP, CTXDESC, STE_VAL } from "./regs.js";
import { type ArmSmmuDevice, orderOf } from "./smmu.js";
import type { CdTableRef } from "./ste.js";

/** A CD table. @linux struct arm_smmu_ctx_desc_cfg */
export interface ArmSmmuCdTable extends CdTableRef {
  order: number;
  /** L1 entries (2-level) or CDs (linear). @linux num_l1_ents */
  numL1Ents: number;
  /** Leaf tables by L1 index (2-level). @linux l1_desc[].l2ptr */
  l2: (number | undefined)[];
  /** Valid CDs at SSIDs other than 0. @linux used_ssids */
  usedSsids: number;
  /** The STE of the master points at this table. @linux cd_table.in_ste */
  inSte: boolean;
}

/** A (master, SSID) attached to a domain. @linux struct arm_smmu_master_domain */
export interface ArmSmmuMasterDomain {
  master: ArmSmmuMaster;
  ssid: number;
  /** Attached through a nested domain whose ATS state the guest controls. @linux nested_ats_flush */
  nestedAtsFlush: boolean;
  /** Counted in the domain's nr_ats_masters. */
  ats: boolean;
}

/**
 * Per-device state.
 * @linux struct arm_smmu_master
 */
export class ArmSmmuMaster {
  /** @linux arm_smmu_master.cd_table */
  cdTable: ArmSmmuCdTable | undefined;
  /** @linux arm_smmu_master.ats_enabled */
  atsEnabled = false;
  /** EATS of the installed STE. @linux arm_smmu_master.ste_ats_enabled */
  steAtsEnabled = false;
  /** Domain at the RID (as last attached by this driver). */
  domain: IommuDomain | undefined;
  /** Domains at PASIDs. */
  readonly pasids = new Map<number, IommuDomain>();
  /** Attachments with a fault handler (IOPF enabled while > 0). @linux arm_smmu_master.iopf_refcount */
  iopfRefcount = 0;

  constructor(
    readonly dev: Device,
    readonly smmu: ArmSmmuDevice,
    /** StreamIDs, deduplicated. @linux arm_smmu_master.streams */
    readonly streams: readonly number[],
    /** @linux arm_smmu_master.ssid_bits */
    readonly ssidBits: number,
    /** @linux arm_smmu_master.stall_enabled */
    readonly stallEnabled: boolean,
    /** PCI ATS usable (device capability and SMMU support). @linux arm_smmu_ats_supported */
    readonly atsSupported: boolean,
    /** PCI PRI usable. */
    readonly priSupported: boolean,
  ) {}

  /** Allocate the CD table (linear, or 2-level when large and supported). @linux arm_smmu_alloc_cd_tables */
  allocCdTables(): ArmSmmuCdTable {
    const smmu = this.smmu;
    const s1cdmax = this.ssidBits;
    const max = 2 ** s1cdmax;
    let t: ArmSmmuCdTable;
    if (!smmu.feat.twoLvlCdtab || max <= CTXDESC.L2_ENTRIES) {
      const order = orderOf(max * CTXDESC.CD_BYTES);
      const pa = smmu.machine.pages.allocPages(order, "arm_smmu_cdtab");
      t = { pa, order, s1fmt: STE_VAL.S1FMT_LINEAR, s1cdmax, numL1Ents: max, l2: [], usedSsids: 0, inSte: false };
    } else {
      const n = Math.ceil(max / CTXDESC.L2_ENTRIES);
      const order = orderOf(n * CTXDESC.L1_DESC_BYTES);
      const pa = smmu.machine.pages.allocPages(order, "arm_smmu_cdtab_l1");
      t = { pa, order, s1fmt: STE_VAL.S1FMT_64K_L2, s1cdmax, numL1Ents: n, l2: [], usedSsids: 0, inSte: false };
    }
    this.cdTable = t;
    return t;
  }

  /** @linux arm_smmu_free_cd_tables */
  freeCdTables(): void {
    const t = this.cdTable;
    if (!t) return;
    const pages = this.smmu.machine.pages;
    const leafOrder = orderOf(CTXDESC.L2_ENTRIES * CTXDESC.CD_BYTES);
    for (const l2 of t.l2) if (l2 !== undefined) pages.freePages(l2, leafOrder);
    pages.freePages(t.pa, t.order);
    this.cdTable = undefined;
  }

  /** Physical address of CD `ssid`, or undefined when its leaf is absent. @linux arm_smmu_get_cd_ptr */
  getCdPtr(ssid: number): number | undefined {
    const t = this.cdTable;
    if (!t) return undefined;
    if (t.s1fmt === STE_VAL.S1FMT_LINEAR) return t.pa + ssid * CTXDESC.CD_BYTES;
    const l2 = t.l2[Math.floor(ssid / CTXDESC.L2_ENTRIES)];
    if (l2 === undefined) return undefined;
    return l2 + (ssid % CTXDESC.L2_ENTRIES) * CTXDESC.CD_BYTES;
  }

  /** CD `ssid`, allocating the table and its leaf. ENOMEM from the allocator. @linux arm_smmu_alloc_cd_ptr */
  allocCdPtr(ssid: number): number {
    if (!this.cdTable) this.allocCdTables();
    const t = this.cdTable!;
    if (t.s1fmt === STE_VAL.S1FMT_64K_L2) {
      const idx = Math.floor(ssid / CTXDESC.L2_ENTRIES);
      if (t.l2[idx] === undefined) {
        const pa = this.smmu.machine.pages.allocPages(
          orderOf(CTXDESC.L2_ENTRIES * CTXDESC.CD_BYTES),
          "arm_smmu_cdtab_l2",
        );
        t.l2[idx] = pa;
        this.smmu.machine.memory.write64(
          t.pa + idx * CTXDESC.L1_DESC_BYTES,
          (BigInt(pa) & CD_L1_DESC.L2PTR_MASK) | CD_L1_DESC.V.mask,
        );
        // An invalid L1 descriptor can be cached.
        this.syncCd(ssid, false);
      }
    }
    const p = this.getCdPtr(ssid);
    if (p === undefined) throw kerr("ENOMEM", `${this.dev.name}: no CD for SSID ${ssid}`);
    return p;
  }

  /** CFGI_CD for every StreamID, then CMD_SYNC. @linux arm_smmu_sync_cd */
  syncCd(ssid: number, leaf: boolean): void {
    const ents = this.streams.map((sid) => {
      const c = newCmdEnt(CMDQ_OP.CFGI_CD);
      c.sid = sid;
      c.ssid = ssid;
      c.leaf = leaf;
      return c;
    });
    this.smmu.issueSync(ents, ents.length);
  }

  /** Read the live CD `ssid` (zeros when absent). */
  readCd(ssid: number): bigint[] {
    const p = this.getCdPtr(ssid);
    const out: bigint[] = [];
    for (let i = 0; i < CTXDESC.CD_BYTES / 8; i++)
      out.push(p === undefined ? 0n : this.smmu.machine.memory.read64(p + 8 * i));
    return out;
  }

  /**
   * Update CD `ssid` at `cdPa` to `target` with the hitless writer, counting valid non-zero SSIDs.
   * @linux arm_smmu_write_cd_entry
   */
  writeCdEntry(ssid: number, cdPa: number, target: EntryQwords): void {
    const mem = this.smmu.machine.memory;
    const t = this.cdTable!;
    const targetValid = (target[0]! & CD.V.mask) !== 0n;
    const curValid = (mem.read64(cdPa) & CD.V.mask) !== 0n;
    if (ssid !== 0 && curValid !== targetValid) t.usedSsids += curValid ? -1 : 1;
    const hook = this.smmu.options.onEntryWrite;
    const writer: EntryWriter = {
      getUsed: armSmmuGetCdUsed,
      read: (i) => mem.read64(cdPa + 8 * i),
      write: (i, v) => {
        mem.write64(cdPa + 8 * i, v);
        hook?.({ kind: "cd", smmu: this.smmu, sid: this.streams[0] ?? 0, ssid, qword: i, value: v });
      },
      sync: () => this.syncCd(ssid, true),
      warn: (m) => this.smmu.core.diag.warnOnOnce(true, `${this.dev.name}: ${m}`),
    };
    armSmmuWriteEntry(writer, target);
  }

  /** Invalidate CD `ssid`. @linux arm_smmu_clear_cd */
  clearCd(ssid: number): void {
    if (!this.cdTable) return;
    const p = this.getCdPtr(ssid);
    if (this.smmu.core.diag.warnOn(p === undefined, `${this.dev.name}: clearing an absent CD`)) return;
    this.writeCdEntry(ssid, p!, newEntry());
  }
}
