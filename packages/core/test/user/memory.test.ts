import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createMachine, HPAGE_PMD_SIZE, MMAP_BASE, PAGE_SIZE, PROT_READ } from "../../src/index.js";

const bytes = (...b: number[]) => new Uint8Array(b);

describe("anonymous memory", () => {
  it("maps page-aligned, zero-filled, lazily backed memory and frees it on munmap", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const before = m.pages.allocatedPages;
    const va = p.mmap(5 * PAGE_SIZE);
    expect(va % BigInt(PAGE_SIZE)).toBe(0n);
    expect(va < BigInt(MMAP_BASE)).toBe(true);
    // Reading untouched memory reads zeroes without allocating (the zero page).
    expect(p.readMemory(va, 3 * PAGE_SIZE).every((b) => b === 0)).toBe(true);
    expect(m.pages.allocatedPages).toBe(before);
    // A write spanning two pages allocates exactly those two.
    p.writeMemory(va + BigInt(PAGE_SIZE - 2), bytes(1, 2, 3, 4));
    expect(m.pages.siteCount("user_page")).toBe(2);
    expect([...p.readMemory(va + BigInt(PAGE_SIZE - 3), 6)]).toEqual([0, 1, 2, 3, 4, 0]);
    expect(p.mm.rss).toBe(2);
    p.munmap(va, 5 * PAGE_SIZE);
    expect(m.pages.siteCount("user_page")).toBe(0);
    expect(() => p.readMemory(va, 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    await m.teardown();
  });

  it("faults with EFAULT on unmapped or forbidden memory and changes nothing then", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const a = p.mmap(2 * PAGE_SIZE);
    p.munmap(a + BigInt(PAGE_SIZE), PAGE_SIZE); // a hole after the first page
    expect(() => p.writeMemory(a + BigInt(PAGE_SIZE - 1), bytes(9, 9))).toThrow(
      expect.objectContaining({ code: "EFAULT" }),
    );
    expect(p.readMemory(a + BigInt(PAGE_SIZE - 1), 1)[0]).toBe(0); // the first byte was not written
    expect(() => p.readMemory(0n, 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    expect(() => p.readMemory(2n ** 60n, 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    const ro = p.mmap(PAGE_SIZE, { prot: PROT_READ });
    expect(() => p.writeMemory(ro, bytes(1))).toThrow(expect.objectContaining({ code: "EFAULT" }));
    expect(p.readMemory(ro, 1)[0]).toBe(0);
    expect(() => p.mmap(0)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => p.munmap(a + 1n, PAGE_SIZE)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    expect(() => p.mmap(PAGE_SIZE, { fd: 7 })).toThrow(expect.objectContaining({ code: "EBADF" }));
    await m.teardown();
  });

  it("splits a mapping on a partial munmap and keeps the rest intact", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(4 * PAGE_SIZE);
    for (let i = 0; i < 4; i++) p.writeMemory(va + BigInt(i * PAGE_SIZE), bytes(i + 1));
    p.munmap(va + BigInt(PAGE_SIZE), 2 * PAGE_SIZE);
    expect(p.mm.mappings).toHaveLength(2);
    expect(p.readMemory(va, 1)[0]).toBe(1);
    expect(p.readMemory(va + BigInt(3 * PAGE_SIZE), 1)[0]).toBe(4);
    expect(() => p.readMemory(va + BigInt(2 * PAGE_SIZE), 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    expect(m.pages.siteCount("user_page")).toBe(2);
    // MAP_FIXED over the hole.
    const again = p.mmap(PAGE_SIZE, { fixed: va + BigInt(PAGE_SIZE) });
    expect(again).toBe(va + BigInt(PAGE_SIZE));
    expect(p.readMemory(again, 1)[0]).toBe(0);
    await p.exit();
    expect(m.pages.siteCount("user_page")).toBe(0);
    await m.teardown();
  });

  it("backs hugeAligned private memory with order-9 folios where a whole 2 MiB block fits", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(HPAGE_PMD_SIZE * 2, { hugeAligned: true });
    expect(va % BigInt(HPAGE_PMD_SIZE)).toBe(0n);
    p.writeMemory(va + 5n, bytes(7));
    expect(m.pages.siteCount("user_thp")).toBe(512);
    const pa0 = p.mm.lookupPhys(va)!;
    expect(p.mm.lookupPhys(va + BigInt(HPAGE_PMD_SIZE - PAGE_SIZE))).toBe(pa0 + HPAGE_PMD_SIZE - PAGE_SIZE);
    const r = m.userSpace.pages.refs(pa0)!;
    expect(r.order).toBe(9);
    expect(r.mapCount).toBe(512);
    // When huge pages cannot be had, it falls back to 4 KiB pages.
    m.faults.failSite("user_thp");
    p.writeMemory(va + BigInt(HPAGE_PMD_SIZE), bytes(1));
    expect(m.pages.siteCount("user_page")).toBe(1);
    m.faults.reset();
    await p.exit();
    expect(m.pages.allocatedPages).toBe(0);
    await m.teardown();
  });

  it("fails a fault with ENOMEM when the page allocation is failed", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(PAGE_SIZE);
    m.faults.failSite("user_page", 1);
    expect(() => p.writeMemory(va, bytes(1))).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    p.writeMemory(va, bytes(1));
    await m.teardown();
  });

  it("agrees with a byte-array model under random writes, reads and unmaps", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            fc.record({
              op: fc.constant("write" as const),
              off: fc.nat(8 * PAGE_SIZE - 1),
              data: fc.uint8Array({ minLength: 1, maxLength: 6000 }),
            }),
            fc.record({ op: fc.constant("read" as const), off: fc.nat(8 * PAGE_SIZE - 1), len: fc.nat(6000) }),
            fc.record({ op: fc.constant("unmap" as const), page: fc.nat(7), n: fc.integer({ min: 1, max: 3 }) }),
          ),
          { maxLength: 25 },
        ),
        async (ops) => {
          const m = await createMachine({ trackFreeStacks: false });
          const p = m.spawnProcess();
          const size = 8 * PAGE_SIZE;
          const va = p.mmap(size);
          const model = new Uint8Array(size);
          const mapped = new Array<boolean>(8).fill(true);
          const ok = (off: number, len: number) => {
            for (let a = Math.floor(off / PAGE_SIZE); a * PAGE_SIZE < off + len; a++) if (!mapped[a]) return false;
            return off + len <= size;
          };
          for (const o of ops) {
            if (o.op === "write") {
              if (ok(o.off, o.data.length)) {
                p.writeMemory(va + BigInt(o.off), o.data);
                model.set(o.data, o.off);
              } else {
                expect(() => p.writeMemory(va + BigInt(o.off), o.data)).toThrow(
                  expect.objectContaining({ code: "EFAULT" }),
                );
              }
            } else if (o.op === "read") {
              if (ok(o.off, o.len)) {
                expect(p.readMemory(va + BigInt(o.off), o.len)).toEqual(model.subarray(o.off, o.off + o.len));
              } else {
                expect(() => p.readMemory(va + BigInt(o.off), o.len)).toThrow(
                  expect.objectContaining({ code: "EFAULT" }),
                );
              }
            } else {
              const n = Math.min(o.n, 8 - o.page);
              p.munmap(va + BigInt(o.page * PAGE_SIZE), n * PAGE_SIZE);
              for (let i = o.page; i < o.page + n; i++) {
                mapped[i] = false;
                model.fill(0, i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
              }
            }
          }
          await m.teardown();
        },
      ),
      { numRuns: 40, seed: 4 },
    );
  });
});

describe("shared memory and memfd", () => {
  it("two shared maps of one memfd see each other's writes; the pages belong to the file", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const fd = p.memfdCreate("buffer", 4 * PAGE_SIZE);
    const a = p.mmap(4 * PAGE_SIZE, { fd, shared: true });
    const b = p.mmap(2 * PAGE_SIZE, { fd, shared: true, offset: 2 * PAGE_SIZE });
    p.writeMemory(a + BigInt(2 * PAGE_SIZE + 10), bytes(5, 6));
    expect([...p.readMemory(b + 10n, 2)]).toEqual([5, 6]);
    p.writeMemory(b, bytes(8));
    expect(p.readMemory(a + BigInt(2 * PAGE_SIZE), 1)[0]).toBe(8);
    expect(p.mm.lookupPhys(a + BigInt(2 * PAGE_SIZE))).toBe(p.mm.lookupPhys(b));
    // Unmapping both keeps the data in the file; a new mapping sees it.
    p.munmap(a, 4 * PAGE_SIZE);
    p.munmap(b, 2 * PAGE_SIZE);
    expect(m.pages.siteCount("shmem_page")).toBe(1);
    const c = p.mmap(4 * PAGE_SIZE, { fd, shared: true });
    expect([...p.readMemory(c + BigInt(2 * PAGE_SIZE), 1)]).toEqual([8]);
    // read(2) on the memfd sees it too.
    expect((await p.read(fd, 3 * PAGE_SIZE))[2 * PAGE_SIZE]).toBe(8);
    // Closing the fd keeps the file alive through the mapping; unmapping the last mapping frees the pages.
    await p.close(fd);
    expect(m.pages.siteCount("shmem_page")).toBeGreaterThan(0);
    p.munmap(c, 4 * PAGE_SIZE);
    expect(m.pages.siteCount("shmem_page")).toBe(0);
    await m.teardown();
  });

  it("a private map of a memfd copies on write; access past the end of the file faults", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const fd = p.memfdCreate("f", PAGE_SIZE);
    const shared = p.mmap(PAGE_SIZE, { fd, shared: true });
    p.writeMemory(shared, bytes(1, 2));
    const priv = p.mmap(2 * PAGE_SIZE, { fd });
    expect([...p.readMemory(priv, 2)]).toEqual([1, 2]);
    p.writeMemory(priv, bytes(9));
    expect([...p.readMemory(shared, 2)]).toEqual([1, 2]);
    expect([...p.readMemory(priv, 2)]).toEqual([9, 2]);
    expect(() => p.readMemory(priv + BigInt(PAGE_SIZE), 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    // Shrinking the file drops its pages from every mapping.
    p.ftruncate(fd, 0);
    expect(() => p.readMemory(shared, 1)).toThrow(expect.objectContaining({ code: "EFAULT" }));
    expect(p.readMemory(priv, 1)[0]).toBe(9); // the private copy stays
    await p.exit();
    await m.teardown();
  });

  it("MAP_SHARED anonymous memory and memfds stay shared across fork; private memory is copied", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const priv = p.mmap(PAGE_SIZE);
    const shared = p.mmap(PAGE_SIZE, { shared: true });
    const fd = p.memfdCreate("f", PAGE_SIZE);
    const file = p.mmap(PAGE_SIZE, { fd, shared: true });
    p.writeMemory(priv, bytes(1));
    p.writeMemory(shared, bytes(2));
    p.writeMemory(file, bytes(3));
    const c = p.fork();
    expect(c.pid).not.toBe(p.pid);
    expect([c.readMemory(priv, 1)[0], c.readMemory(shared, 1)[0], c.readMemory(file, 1)[0]]).toEqual([1, 2, 3]);
    c.writeMemory(priv, bytes(10));
    c.writeMemory(shared, bytes(20));
    c.writeMemory(file, bytes(30));
    expect([p.readMemory(priv, 1)[0], p.readMemory(shared, 1)[0], p.readMemory(file, 1)[0]]).toEqual([1, 20, 30]);
    p.writeMemory(priv, bytes(11));
    expect(c.readMemory(priv, 1)[0]).toBe(10);
    await p.exit();
    expect(c.readMemory(shared, 1)[0]).toBe(20);
    await c.exit();
    expect(m.pages.allocatedPages).toBe(0);
    await m.teardown();
  });

  it("hugetlb memfds are backed by 2 MiB folios", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    expect(() => p.memfdCreate("h", PAGE_SIZE, { hugetlb: true })).toThrow(expect.objectContaining({ code: "EINVAL" }));
    const fd = p.memfdCreate("h", HPAGE_PMD_SIZE, { hugetlb: true });
    const va = p.mmap(HPAGE_PMD_SIZE, { fd, shared: true });
    expect(va % BigInt(HPAGE_PMD_SIZE)).toBe(0n);
    p.writeMemory(va + BigInt(HPAGE_PMD_SIZE - 1), bytes(1));
    expect(m.pages.siteCount("hugetlb_page")).toBe(512);
    await p.exit();
    expect(m.pages.siteCount("hugetlb_page")).toBe(0);
    await m.teardown();
  });
});
