/**
 * A driver's file mapped into user space (f_op->mmap with remap_pfn_range and vm_ops): the mapping reaches the
 * driver's physical pages, the driver sees every copy of the mapping come and go (fork, a split by a partial
 * munmap, munmap, exit), a refused mmap leaves nothing behind, and GUP refuses the pages (VM_PFNMAP).
 */
import { describe, expect, it } from "vitest";
import {
  createMachine,
  type FileOperations,
  type KernelModule,
  kerr,
  type Machine,
  PAGE_SIZE,
  PROT_EXEC,
  PROT_READ,
  PROT_WRITE,
  pinUserPages,
  type Vma,
} from "../../src/index.js";

/** What the test driver saw. */
interface RegsDev {
  pa: number;
  /** Live mappings by the driver's count: +1 on mmap and open, -1 on close. */
  live: number;
  opens: number;
  closes: number;
}

/** A driver exposing `pages` pages of its own at file offset 0 (MAP_SHARED, no exec), like a register window. */
function regsModule(dev: RegsDev, pages: number): KernelModule {
  const order = Math.ceil(Math.log2(pages));
  const vmOps = {
    open: (_vma: Vma) => {
      dev.live++;
      dev.opens++;
    },
    close: (_vma: Vma) => {
      dev.live--;
      dev.closes++;
    },
  };
  return {
    name: "regs",
    init: async ({ machine, owner }) => {
      dev.pa = machine.pages.allocPages(order, "regs_window");
      machine.memory.write32(dev.pa, 0xfeed_f00d);
      const fops: FileOperations = {
        owner,
        mmap: (_file, vma) => {
          if (!vma.shared) throw kerr("EINVAL", "regs: MAP_SHARED only");
          if (vma.prot & PROT_EXEC) throw kerr("EPERM", "regs: no exec");
          if (vma.pgoff !== 0 || vma.end - vma.start !== pages * PAGE_SIZE) throw kerr("ENXIO", "regs: bad window");
          vma.vmOps = vmOps;
          vma.privateData = dev;
          vma.remapPfnRange(dev.pa);
          dev.live++;
        },
      };
      machine.chrdevs.register("/dev/regs", fops);
    },
    exit: async ({ machine }) => {
      machine.chrdevs.unregister("/dev/regs");
      machine.pages.freePages(dev.pa, order);
    },
  };
}

async function boot(pages = 2): Promise<{ m: Machine; dev: RegsDev }> {
  const dev: RegsDev = { pa: 0, live: 0, opens: 0, closes: 0 };
  const m = await createMachine({ modules: [regsModule(dev, pages)] });
  await m.boot();
  return { m, dev };
}

const LEN = 2 * PAGE_SIZE;

describe("a driver's mmap", () => {
  it("maps the driver's physical pages: user reads and writes land there, without user pages or RSS", async () => {
    const { m, dev } = await boot();
    const p = m.spawnProcess();
    const fd = await p.open("/dev/regs");
    const before = m.pages.siteCount("user_page");
    const va = p.mmap(LEN, { fd, shared: true });
    expect(dev.live).toBe(1);
    expect(new DataView(p.readMemory(va, 4).buffer).getUint32(0, true)).toBe(0xfeed_f00d);
    p.writeMemory(va + BigInt(PAGE_SIZE + 8), new Uint8Array([1, 2, 3, 4]));
    expect(m.memory.read32(dev.pa + PAGE_SIZE + 8)).toBe(0x0403_0201);
    expect(p.mm.lookupPhys(va + BigInt(PAGE_SIZE + 8))).toBe(dev.pa + PAGE_SIZE + 8);
    expect(m.pages.siteCount("user_page")).toBe(before);
    expect(p.mm.rss).toBe(0);
    // The mapping holds the file: closing the fd keeps it usable.
    await p.close(fd);
    expect(p.readMemory(va + BigInt(PAGE_SIZE + 8), 1)[0]).toBe(1);
    p.munmap(va, LEN);
    expect(dev.live).toBe(0);
    expect(dev.closes).toBe(1);
    await m.teardown();
  });

  it("refuses with the driver's errno and leaves no mapping and no file reference", async () => {
    const { m, dev } = await boot();
    const p = m.spawnProcess();
    const fd = await p.open("/dev/regs");
    const file = p.files.lookup(fd)!;
    const refs = file.count;
    expect(() => p.mmap(LEN, { fd })).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => p.mmap(LEN, { fd, shared: true, prot: PROT_READ | PROT_EXEC })).toThrow(
      expect.objectContaining({ code: "EPERM" }),
    );
    expect(() => p.mmap(LEN, { fd, shared: true, offset: PAGE_SIZE })).toThrow(
      expect.objectContaining({ code: "ENXIO" }),
    );
    expect(() => p.mmap(PAGE_SIZE, { fd, shared: true })).toThrow(expect.objectContaining({ code: "ENXIO" }));
    expect(p.mm.mappings).toHaveLength(0);
    expect(file.count).toBe(refs);
    expect(dev.live).toBe(0);
    expect(dev.closes).toBe(0);
    await p.close(fd);
    await m.teardown();
  });

  it("tells the driver of every copy: fork and a split open, munmap and exit close", async () => {
    const { m, dev } = await boot(3);
    const p = m.spawnProcess();
    const fd = await p.open("/dev/regs");
    const file = p.files.lookup(fd)!;
    const va = p.mmap(3 * PAGE_SIZE, { fd, shared: true, prot: PROT_READ | PROT_WRITE });
    expect(dev.live).toBe(1);
    const c = p.fork();
    expect([dev.live, dev.opens]).toEqual([2, 1]);
    // The child's copy maps the same physical pages.
    c.writeMemory(va, new Uint8Array([0x42]));
    expect(p.readMemory(va, 1)[0]).toBe(0x42);
    // A hole in the middle splits the mapping: the part split off is a new mapping, opened, with its own file
    // reference; it still reaches the driver's third page.
    const refs = file.count;
    p.munmap(va + BigInt(PAGE_SIZE), PAGE_SIZE);
    expect(p.mm.mappings).toHaveLength(2);
    expect([dev.live, dev.opens, dev.closes]).toEqual([3, 2, 0]);
    expect(file.count).toBe(refs + 1);
    expect(p.mm.lookupPhys(va + BigInt(2 * PAGE_SIZE))).toBe(dev.pa + 2 * PAGE_SIZE);
    // Trimming a mapping (here: all of one part) closes only what goes away.
    p.munmap(va, PAGE_SIZE);
    expect([dev.live, dev.closes]).toEqual([2, 1]);
    await c.exit();
    expect(dev.live).toBe(1);
    await p.exit();
    expect([dev.live, dev.opens, dev.closes]).toEqual([0, 2, 3]);
    await m.teardown();
  });

  it("cannot be pinned: GUP of a VM_PFNMAP mapping is EFAULT and pins nothing", async () => {
    const { m } = await boot();
    const p = m.spawnProcess();
    const fd = await p.open("/dev/regs");
    const va = p.mmap(LEN, { fd, shared: true });
    await expect(pinUserPages(p.mm, va, 1, { write: true, longterm: true })).rejects.toMatchObject({
      code: "EFAULT",
    });
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    await p.exit();
    await m.teardown();
  });
});
