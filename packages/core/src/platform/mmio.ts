/**
 * The MMIO address space: register windows of device models mapped at physical addresses. A driver's register access
 * is routed to the window containing the address and handed to that device's handler with the offset in the window.
 */
import { KernelError } from "../kernel/errno.js";

/**
 * A device's register file as the bus sees it. Offsets are relative to the start of the window. 64-bit accessors are
 * optional; without them a 64-bit access is two 32-bit accesses, low word first.
 * @linux the device side of readl/writel/readq/writeq (a QEMU MemoryRegionOps)
 */
export interface MmioHandler {
  read32(offset: number): number;
  write32(offset: number, value: number): void;
  read64?(offset: number): bigint;
  write64?(offset: number, value: bigint): void;
}

/**
 * One mapped register window.
 * @linux struct resource (an iomem region)
 */
export interface MmioWindow {
  readonly base: number;
  readonly size: number;
  readonly name: string;
  readonly handler: MmioHandler;
}

/**
 * An access that hit no mapped window (or ran past the end of one): the bus error a real machine would raise.
 * @linux an external abort / machine check on an unclaimed MMIO access
 */
export class MmioBusError extends Error {
  /** The physical address accessed. */
  readonly address: number;
  constructor(address: number, message: string) {
    super(message);
    this.name = "MmioBusError";
    this.address = address;
  }
}

function hex(n: number): string {
  return Number.isFinite(n) && n >= 0 ? `0x${n.toString(16)}` : String(n);
}

function describe(w: MmioWindow): string {
  return `"${w.name}" [${hex(w.base)}-${hex(w.base + w.size - 1)}]`;
}

/**
 * The machine's MMIO bus.
 * @linux the physical address map behind ioremap(): request_mem_region + readl/writel/readq/writeq
 */
export class MmioBus {
  /** Mapped windows sorted by base. */
  private readonly sorted: MmioWindow[] = [];
  /** The window of the last access: drivers hammer one device's registers at a time. */
  private last: MmioWindow | undefined;

  /**
   * Map `handler` at [base, base + size). Throws `EBUSY` naming both windows when it overlaps a mapped one, and
   * `EINVAL` for an empty, negative or non-integer range.
   * @linux request_mem_region + ioremap
   */
  map(base: number, size: number, handler: MmioHandler, name: string): MmioWindow {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || base < 0 || size <= 0) {
      throw new KernelError("EINVAL", `MMIO window "${name}" at ${hex(base)} size ${hex(size)} is not a valid range`);
    }
    const w: MmioWindow = { base, size, name, handler };
    const end = base + size;
    let i = 0;
    while (i < this.sorted.length && this.sorted[i]!.base < base) i++;
    const prev = this.sorted[i - 1];
    const next = this.sorted[i];
    for (const o of [prev, next]) {
      if (o !== undefined && o.base < end && base < o.base + o.size) {
        throw new KernelError("EBUSY", `MMIO window ${describe(w)} overlaps ${describe(o)}`);
      }
    }
    this.sorted.splice(i, 0, w);
    return w;
  }

  /**
   * Remove the window mapped at `base`. Throws `EINVAL` when no window starts there.
   * @linux iounmap + release_mem_region
   */
  unmap(base: number): void {
    const i = this.sorted.findIndex((w) => w.base === base);
    if (i < 0) throw new KernelError("EINVAL", `no MMIO window starts at ${hex(base)}`);
    if (this.last === this.sorted[i]) this.last = undefined;
    this.sorted.splice(i, 1);
  }

  /** The window containing `pa`, if any. */
  find(pa: number): MmioWindow | undefined {
    const l = this.last;
    if (l !== undefined && pa >= l.base && pa < l.base + l.size) return l;
    let lo = 0;
    let hi = this.sorted.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const w = this.sorted[mid]!;
      if (pa < w.base) hi = mid - 1;
      else if (pa >= w.base + w.size) lo = mid + 1;
      else return w;
    }
    return undefined;
  }

  /** Every mapped window, by base address. */
  windows(): readonly MmioWindow[] {
    return this.sorted.slice();
  }

  /** The window that holds all `len` bytes at `pa`; a bus error otherwise. */
  private route(pa: number, len: number, op: string): MmioWindow {
    const w = this.find(pa);
    if (w === undefined || !Number.isInteger(pa)) {
      throw new MmioBusError(pa, `MMIO ${op} at ${hex(pa)}: no device mapped there`);
    }
    if (pa + len > w.base + w.size) {
      throw new MmioBusError(pa, `MMIO ${op} at ${hex(pa)} runs past the end of ${describe(w)}`);
    }
    this.last = w;
    return w;
  }

  /**
   * Read a 32-bit register.
   * @linux readl
   */
  read32(pa: number): number {
    const w = this.route(pa, 4, "read32");
    return w.handler.read32(pa - w.base) >>> 0;
  }

  /**
   * Write a 32-bit register (`value` taken modulo 2^32).
   * @linux writel
   */
  write32(pa: number, value: number): void {
    const w = this.route(pa, 4, "write32");
    w.handler.write32(pa - w.base, value >>> 0);
  }

  /**
   * Read a 64-bit register: the handler's 64-bit read when it has one, else two 32-bit reads, low word first.
   * @linux readq (lo_hi_readq without native 64-bit access)
   */
  read64(pa: number): bigint {
    const w = this.route(pa, 8, "read64");
    const off = pa - w.base;
    const h = w.handler;
    if (h.read64 !== undefined) return BigInt.asUintN(64, h.read64(off));
    const lo = h.read32(off) >>> 0;
    const hi = h.read32(off + 4) >>> 0;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /**
   * Write a 64-bit register (`value` taken modulo 2^64): the handler's 64-bit write when it has one, else two 32-bit
   * writes, low word first.
   * @linux writeq (lo_hi_writeq without native 64-bit access)
   */
  write64(pa: number, value: bigint): void {
    const w = this.route(pa, 8, "write64");
    const off = pa - w.base;
    const h = w.handler;
    const v = BigInt.asUintN(64, value);
    if (h.write64 !== undefined) {
      h.write64(off, v);
      return;
    }
    h.write32(off, Number(v & 0xffffffffn));
    h.write32(off + 4, Number(v >> 32n));
  }
}
