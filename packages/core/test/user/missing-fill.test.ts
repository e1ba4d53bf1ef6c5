import { describe, expect, it } from "vitest";
import {
  createMachine,
  DEFAULT_POLLMASK,
  PAGE_SIZE,
  pinUserPagesFast,
  shmemInodeOf,
  unpinUserPages,
  vfsPoll,
} from "../../src/index.js";

describe("missing-page fill (userfaultfd MISSING + UFFDIO_COPY)", () => {
  it("fills an anonymous page once, on its first touch, for loads, stores and pins alike", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(4 * PAGE_SIZE);
    const calls: number[] = [];
    p.mm.missingPageFill = (addr) => {
      calls.push(addr);
      return new Uint8Array(PAGE_SIZE).fill(0x40 + calls.length);
    };
    // A read of an untouched page is not the zero page while a handler is registered.
    expect(p.readMemory(va + 8n, 2)).toEqual(Uint8Array.of(0x41, 0x41));
    p.writeMemory(va + BigInt(PAGE_SIZE), Uint8Array.of(7));
    expect(p.readMemory(va + BigInt(PAGE_SIZE), 2)).toEqual(Uint8Array.of(7, 0x42));
    const [pa] = pinUserPagesFast(p.mm, va + BigInt(2 * PAGE_SIZE), 1, { longterm: true });
    expect(m.memory.readBytes(pa!, 1)).toEqual(Uint8Array.of(0x43));
    expect(calls).toEqual([Number(va), Number(va) + PAGE_SIZE, Number(va) + 2 * PAGE_SIZE]);
    // Touching a filled page again does not ask again.
    p.readMemory(va, PAGE_SIZE);
    expect(calls.length).toBe(3);
    unpinUserPages(p.mm, [pa!]);
    await p.exit();
    await m.teardown();
  });

  it("fills a shmem folio from the handler when it enters the page cache", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const fd = p.memfdCreate("guest", 2 * PAGE_SIZE);
    const inode = shmemInodeOf(p.files.lookup(fd)!)!;
    const asked: number[] = [];
    inode.missingFill = (index) => {
      asked.push(index);
      return new Uint8Array(PAGE_SIZE).fill(index + 1);
    };
    const va = p.mmap(2 * PAGE_SIZE, { fd, shared: true });
    expect(p.readMemory(va + BigInt(PAGE_SIZE), 1)).toEqual(Uint8Array.of(2));
    expect(p.readMemory(va, 1)).toEqual(Uint8Array.of(1));
    expect(asked).toEqual([1, 0]);
    p.munmap(va, 2 * PAGE_SIZE);
    await p.close(fd);
    await p.exit();
    await m.teardown();
  });
});

describe("dup2, F_DUPFD and poll of files", () => {
  it("dup2 replaces and closes the target; F_DUPFD takes the lowest free fd at or above the minimum", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const a = p.memfdCreate("a", PAGE_SIZE);
    const b = p.memfdCreate("b", PAGE_SIZE);
    const fileA = p.files.lookup(a)!;
    expect(await p.dup2(a, b)).toBe(b);
    expect(p.files.lookup(b)).toBe(fileA);
    expect(p.dupFrom(a, 10)).toBe(10);
    expect(p.dupFrom(a, 10)).toBe(11);
    expect(p.files.lookup(11)).toBe(fileA);
    await expect(p.dup2(99, 5)).rejects.toMatchObject({ code: "EBADF" });
    expect(() => p.dupFrom(99, 0)).toThrow(expect.objectContaining({ code: "EBADF" }));
    // A file without a poll op is always ready.
    expect(vfsPoll(fileA)).toBe(DEFAULT_POLLMASK);
    for (const fd of [a, b, 10, 11]) await p.close(fd);
    await p.exit();
    await m.teardown();
  });
});
