/**
 * The hitless STE/CD update algorithm. The SMMU may fetch an entry between any two of the CPU's 64-bit stores, so
 * an update is planned from the bits each configuration uses: change only bits the current configuration ignores,
 * then flip one "critical" qword, then clear what the new configuration ignores; when more than one used qword
 * must change, break the entry (V=0) first. Each step that changed memory is followed by the writer's sync
 * (CFGI + CMD_SYNC).
 * @linux arm-smmu-v3.c: struct arm_smmu_entry_writer(_ops), arm_smmu_get_ste_used, arm_smmu_get_cd_used,
 * arm_smmu_entry_qword_diff, entry_set, arm_smmu_write_entry
 */
import { CD, STE, STE_VAL } from "./regs.js";

/** Qwords in an STE or CD. @linux NUM_ENTRY_QWORDS */
export const NUM_ENTRY_QWORDS = 8;

const ALL = (1n << 64n) - 1n;

/** An 8-qword entry image. */
export type EntryQwords = BigUint64Array;

/** A zeroed entry image. */
export function newEntry(): EntryQwords {
  return new BigUint64Array(NUM_ENTRY_QWORDS);
}

/**
 * What the algorithm needs from a writer: the used-bits function of the entry kind, the memory of the entry, and
 * the sync after each step.
 * @linux struct arm_smmu_entry_writer_ops (+ the entry pointer of arm_smmu_write_entry)
 */
export interface EntryWriter {
  /** Bits the hardware reads for the configuration in `ent`. @linux entry_writer_ops.get_used */
  getUsed(ent: EntryQwords, used: EntryQwords): void;
  /** Read qword `i` of the live entry. */
  read(i: number): bigint;
  /** Store qword `i` of the live entry (one 64-bit single-copy-atomic store). @linux WRITE_ONCE */
  write(i: number, v: bigint): void;
  /** Make the hardware see the stores so far (CFGI_STE / CFGI_CD + CMD_SYNC). @linux entry_writer_ops.sync */
  sync(): void;
  /** A WARN_ON_ONCE sink. */
  warn?(message: string): void;
}

/**
 * STE bits the hardware uses for the configuration in `ent`.
 * @linux arm_smmu_get_ste_used
 */
export function armSmmuGetSteUsed(ent: EntryQwords, used: EntryQwords): void {
  used.fill(0n);
  used[0] = STE.V.mask;
  if (!(ent[0]! & STE.V.mask)) return;
  used[0] |= STE.CFG.mask;
  const cfg = Number((ent[0]! & STE.CFG.mask) >> 1n);
  if (cfg & 1) {
    used[0] |= STE.S1FMT.mask | STE.S1CTXPTR_MASK | STE.S1CDMAX.mask;
    used[1]! |=
      STE.S1DSS.mask |
      STE.S1CIR.mask |
      STE.S1COR.mask |
      STE.S1CSH.mask |
      STE.S1STALLD.mask |
      STE.STRW.mask |
      STE.EATS.mask |
      STE.MEV.mask;
    used[2]! |= STE.S2VMID.mask;
    if (Number((ent[1]! & STE.S1DSS.mask) >> BigInt(STE.S1DSS.bit)) === STE_VAL.S1DSS_BYPASS) {
      used[1]! |= STE.SHCFG.mask;
    }
  }
  if (cfg & 2) {
    used[1]! |= STE.S2FWB.mask | STE.EATS.mask | STE.SHCFG.mask | STE.MEV.mask;
    used[2]! |=
      STE.S2VMID.mask |
      STE.VTCR.mask |
      STE.S2AA64.mask |
      STE.S2ENDI.mask |
      STE.S2PTW.mask |
      STE.S2S.mask |
      STE.S2R.mask;
    used[3]! |= STE.S2TTB_MASK;
  }
  if (cfg === STE_VAL.CFG_BYPASS) used[1]! |= STE.SHCFG.mask;
}

/**
 * CD bits the hardware uses for the configuration in `ent`.
 * @linux arm_smmu_get_cd_used
 */
export function armSmmuGetCdUsed(ent: EntryQwords, used: EntryQwords): void {
  used.fill(0n);
  used[0] = CD.V.mask;
  if (!(ent[0]! & CD.V.mask)) return;
  used.fill(ALL);
  if (ent[0]! & CD.EPD0.mask) {
    used[0]! &= ~(CD.T0SZ.mask | CD.TG0.mask | CD.IRGN0.mask | CD.ORGN0.mask | CD.SH0.mask) & ALL;
    used[1]! &= ~CD.TTB0_MASK & ALL;
  }
}

/**
 * Which qwords must change used bits to go from `entry` to `target`, and in `unusedUpdate` the entry with every
 * currently unused bit already set to its target value. Bit i of the result: qword i is critical.
 * @linux arm_smmu_entry_qword_diff
 */
export function armSmmuEntryQwordDiff(
  writer: EntryWriter,
  entry: EntryQwords,
  target: EntryQwords,
  unusedUpdate: EntryQwords,
): number {
  const targetUsed = newEntry();
  const curUsed = newEntry();
  writer.getUsed(entry, curUsed);
  writer.getUsed(target, targetUsed);
  let diff = 0;
  for (let i = 0; i < NUM_ENTRY_QWORDS; i++) {
    if (target[i]! & ~targetUsed[i]! & ALL) {
      writer.warn?.(`entry writer: target qword ${i} sets bits its configuration does not use`);
    }
    unusedUpdate[i] = (entry[i]! & curUsed[i]!) | (target[i]! & ~curUsed[i]! & ALL);
    if ((unusedUpdate[i]! & targetUsed[i]!) !== target[i]!) diff |= 1 << i;
  }
  return diff;
}

/** Store qwords [start, start+len) of `target` that differ; sync if anything changed. @linux entry_set */
function entrySet(writer: EntryWriter, entry: EntryQwords, target: EntryQwords, start: number, len: number): boolean {
  let changed = false;
  for (let i = start; len !== 0; len--, i++) {
    if (entry[i] !== target[i]) {
      writer.write(i, target[i]!);
      entry[i] = target[i]!;
      changed = true;
    }
  }
  if (changed) writer.sync();
  return changed;
}

function popcount8(x: number): number {
  let n = 0;
  for (let v = x; v; v &= v - 1) n++;
  return n;
}

/**
 * Move the live entry to `target` so that every intermediate state the hardware can fetch is legal: hitless when
 * at most one qword's used bits change, otherwise V=0, fill, then qword 0.
 * @linux arm_smmu_write_entry
 */
export function armSmmuWriteEntry(writer: EntryWriter, target: EntryQwords): void {
  const entry = newEntry();
  for (let i = 0; i < NUM_ENTRY_QWORDS; i++) entry[i] = writer.read(i);
  const unusedUpdate = newEntry();
  const diff = armSmmuEntryQwordDiff(writer, entry, target, unusedUpdate);
  if (popcount8(diff) === 1) {
    const critical = 31 - Math.clz32(diff & -diff);
    unusedUpdate[critical] = entry[critical]!;
    entrySet(writer, entry, unusedUpdate, 0, NUM_ENTRY_QWORDS);
    entrySet(writer, entry, target, critical, 1);
    entrySet(writer, entry, target, 0, NUM_ENTRY_QWORDS);
  } else if (diff) {
    unusedUpdate[0] = 0n;
    entrySet(writer, entry, unusedUpdate, 0, 1);
    entrySet(writer, entry, target, 1, NUM_ENTRY_QWORDS - 1);
    entrySet(writer, entry, target, 0, 1);
  } else if (entrySet(writer, entry, target, 0, NUM_ENTRY_QWORDS)) {
    writer.warn?.("entry writer: unused bits of the live entry were not zero");
  }
}
