import { describe, expect, it } from "vitest";
import {
  accountLockedVm,
  anonInodeGetFile,
  capable,
  createMachine,
  decrUserLockedVm,
  fdInstall,
  fget,
  fput,
  GUP_PIN_COUNTING_BIAS,
  HPAGE_PMD_SIZE,
  incrUserLockedVm,
  type KernelModule,
  memfdPinFolios,
  memlockLimitPages,
  PAGE_SIZE,
  PROT_READ,
  pageMaybeDmaPinned,
  pinUserPages,
  pinUserPagesFast,
  TeardownError,
  unpinFolios,
  unpinUserPageRangeDirtyLock,
  unpinUserPages,
  unpinUserPagesDirtyLock,
} from "../../src/index.js";

describe("pin_user_pages", () => {
  it("pins with GUP_PIN_COUNTING_BIAS, keeps pinned pages past munmap and exit, frees them on unpin", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(4 * PAGE_SIZE);
    p.writeMemory(va, new Uint8Array([0xaa]));
    const pfns = await pinUserPages(p.mm, va, 4, { write: true, longterm: true });
    expect(pfns).toHaveLength(4);
    expect(pfns[0]).toBe(p.mm.lookupPhys(va));
    expect(m.memory.read8(pfns[0]!)).toBe(0xaa);
    const refs = m.userSpace.pages;
    for (const pa of pfns) {
      expect(refs.refs(pa)).toMatchObject({ refcount: 1 + GUP_PIN_COUNTING_BIAS, pinCount: 1, mapCount: 1 });
      expect(pageMaybeDmaPinned(p.mm, pa)).toBe(true);
    }
    // A second pin of the same page stacks.
    const again = pinUserPagesFast(p.mm, va, 1, { longterm: true });
    expect(refs.refs(again[0]!)!.refcount).toBe(1 + 2 * GUP_PIN_COUNTING_BIAS);
    unpinUserPages(p.mm, again);

    p.munmap(va, 4 * PAGE_SIZE);
    expect(refs.refs(pfns[0]!)).toMatchObject({ refcount: GUP_PIN_COUNTING_BIAS, mapCount: 0 });
    expect(m.pages.siteCount("user_page")).toBe(4);
    await p.exit();
    expect(m.pages.siteCount("user_page")).toBe(4);
    expect(refs.pinnedCount).toBe(4);
    // A device could still DMA into them: the data is still there.
    expect(m.memory.read8(pfns[0]!)).toBe(0xaa);

    unpinUserPagesDirtyLock(p.mm, pfns.slice(0, 2), true);
    unpinUserPageRangeDirtyLock(refs, pfns[2]!, 1, false);
    unpinUserPages(p.mm, [pfns[3]!]);
    expect(refs.pinnedCount).toBe(0);
    expect(refs.pins()).toEqual([]);
    expect(m.pages.siteCount("user_page")).toBe(0);
    await m.teardown();
  });

  it("faults missing pages in and fails with EFAULT outside a mapping or without write permission", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(2 * PAGE_SIZE);
    const [pa] = await pinUserPages(p.mm, va, 1, { longterm: true });
    expect(m.userSpace.pages.refs(pa!)!.mapCount).toBe(1); // a real page, not the zero page
    unpinUserPages(p.mm, [pa!]);
    // Two pages mapped, three asked: nothing stays pinned.
    await expect(pinUserPages(p.mm, va, 3, { write: true })).rejects.toMatchObject({ code: "EFAULT" });
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    const ro = p.mmap(PAGE_SIZE, { prot: PROT_READ });
    await expect(pinUserPages(p.mm, ro, 1, { write: true })).rejects.toMatchObject({ code: "EFAULT" });
    const ok = await pinUserPages(p.mm, ro, 1, {});
    unpinUserPages(p.mm, ok);
    // An injected allocation failure unwinds the pins already taken.
    const fresh = p.mmap(2 * PAGE_SIZE);
    m.faults.failNth(2, ["user_page"]);
    await expect(pinUserPages(p.mm, fresh, 2, { write: true })).rejects.toMatchObject({ code: "ENOMEM" });
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    m.faults.reset();
    await p.exit();
    await expect(pinUserPages(p.mm, va, 1, {})).rejects.toMatchObject({ code: "EFAULT" });
    await m.teardown();
  });

  it("pins pages of a large folio with one reference and one _pincount each", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(HPAGE_PMD_SIZE, { hugeAligned: true });
    const pfns = await pinUserPages(p.mm, va + BigInt(PAGE_SIZE), 3, { write: true, longterm: true });
    expect(pfns[1]! - pfns[0]!).toBe(PAGE_SIZE);
    const r = m.userSpace.pages.refs(pfns[0]!)!;
    expect(r).toMatchObject({ order: 9, pinCount: 3, refcount: 512 + 3 });
    await p.exit();
    expect(m.userSpace.pages.refs(pfns[0]!)).toMatchObject({ refcount: 3, pinCount: 3 });
    unpinUserPages(p.mm, pfns);
    expect(m.pages.allocatedPages).toBe(0);
    await m.teardown();
  });

  it("a read-only long-term pin of a private file mapping unshares first (gup_must_unshare)", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const fd = p.memfdCreate("file", 2 * PAGE_SIZE);
    const shared = p.mmap(2 * PAGE_SIZE, { fd, shared: true });
    p.writeMemory(shared, new Uint8Array([7]));
    const priv = p.mmap(2 * PAGE_SIZE, { fd });
    // Read-faulted first: the private mapping shows the page-cache page.
    expect(p.readMemory(priv, 1)[0]).toBe(7);
    const cachePa = p.mm.lookupPhys(shared)!;
    expect(p.mm.lookupPhys(priv)).toBe(cachePa);
    const [pa] = pinUserPagesFast(p.mm, priv, 1, { longterm: true });
    // The pin holds the process's own copy, not the page cache's page.
    expect(pa).not.toBe(cachePa);
    expect(p.mm.lookupPhys(priv)).toBe(pa);
    expect(m.memory.read8(pa!)).toBe(7);
    // A later write by the process lands in the pinned page: a device reading it sees the write.
    p.writeMemory(priv, new Uint8Array([9]));
    expect(p.mm.lookupPhys(priv)).toBe(pa);
    expect(m.memory.read8(pa!)).toBe(9);
    expect(p.readMemory(shared, 1)[0]).toBe(7);
    // A short-term read-only pin does not unshare (the page is untouched here, so it comes from the page cache).
    const [short] = pinUserPagesFast(p.mm, priv + BigInt(PAGE_SIZE), 1, {});
    p.readMemory(shared + BigInt(PAGE_SIZE), 1);
    expect(short).toBe(p.mm.lookupPhys(shared + BigInt(PAGE_SIZE)));
    unpinUserPages(p.mm, [pa!, short!]);
    await p.exit();
    await m.teardown();
  });

  it("reports an unpin of a page that is not pinned", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(PAGE_SIZE);
    p.writeMemory(va, new Uint8Array([1]));
    const pa = p.mm.lookupPhys(va)!;
    await m.diag.expectWarning({ kind: "refcount", message: /not pinned/ }, () => unpinUserPages(p.mm, [pa]));
    expect(m.userSpace.pages.refs(pa)!.refcount).toBe(1);
    await m.teardown();
  });

  it("pins memfd folios by file offset; they outlive the file until unpinned", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const fd = p.memfdCreate("buf", 4 * PAGE_SIZE);
    await p.write(fd, new Uint8Array(PAGE_SIZE + 1).fill(3));
    const file = fget(p, fd);
    const got = memfdPinFolios(file, 100, 3 * PAGE_SIZE - 1);
    expect(got.folios).toHaveLength(3);
    expect(got.offset).toBe(100);
    expect(m.memory.read8(got.folios[1]!)).toBe(3);
    expect(() => memfdPinFolios(file, 0, 4 * PAGE_SIZE)).toThrow(expect.objectContaining({ code: "EINVAL" }));
    await fput(file);
    await p.close(fd);
    expect(m.pages.siteCount("shmem_page")).toBe(3);
    unpinFolios(m.userSpace.pages, got.folios);
    expect(m.pages.siteCount("shmem_page")).toBe(0);

    const hfd = p.memfdCreate("huge", 2 * HPAGE_PMD_SIZE, { hugetlb: true });
    const hfile = fget(p, hfd);
    const h = memfdPinFolios(hfile, HPAGE_PMD_SIZE - PAGE_SIZE, HPAGE_PMD_SIZE + 5);
    expect(h.orders).toEqual([9, 9]);
    expect(h.offset).toBe(HPAGE_PMD_SIZE - PAGE_SIZE);
    unpinFolios(m.userSpace.pages, h.folios);
    await fput(hfile);
    await m.teardown();
  });

  it("fails teardown on a leaked pin, naming the process and the VA", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(2 * PAGE_SIZE);
    await pinUserPages(p.mm, va + BigInt(PAGE_SIZE), 1, { write: true, longterm: true });
    const err = await m.teardown().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TeardownError);
    const report = (err as TeardownError).report;
    expect(report).toMatch(
      new RegExp(`pinned \\(longterm\\) by pid ${p.pid} at VA 0x${(va + BigInt(PAGE_SIZE)).toString(16)}`),
    );
    expect(report).toMatch(/1 page from user_page still allocated/);
  });

  it("unpins a range a folio at a time: huge-page pins dropped together, order-0 pages and unpinned pages checked", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(HPAGE_PMD_SIZE, { hugeAligned: true });
    const small = p.mmap(2 * PAGE_SIZE);
    const refs = m.userSpace.pages;
    const pas = pinUserPagesFast(p.mm, va, 512, { write: true, longterm: true });
    const head = refs.refs(pas[0]!)!;
    expect(head).toMatchObject({ order: 9, pinCount: 512, refcount: 512 + 512 });
    // The last 12 pages keep their pins; the rest of the folio drops its pins in one step.
    unpinUserPageRangeDirtyLock(p.mm, pas[0]!, 500, true);
    expect(refs.refs(pas[0]!)).toMatchObject({ pinCount: 12, refcount: 512 + 12, dirty: true });
    expect(refs.pins().map((x) => x.pa)).toEqual(pas.slice(500));
    // Asking for more pins than the folio holds falls back to page-by-page: the 12 go, then 488 reports.
    await m.diag.expectWarning({ kind: "refcount", message: /not pinned/ }, () =>
      unpinUserPageRangeDirtyLock(p.mm, pas[0]!, 500, false),
    );
    expect(refs.refs(pas[0]!)).toMatchObject({ pinCount: 0, refcount: 512 });
    const s = pinUserPagesFast(p.mm, small, 2, { write: true, longterm: true });
    unpinUserPageRangeDirtyLock(p.mm, s[0]!, 1, false);
    unpinUserPageRangeDirtyLock(p.mm, s[1]!, 1, false);
    expect(refs.pinnedCount).toBe(0);
    await p.exit();
    await m.teardown();
  });

  it("names each page's own VA and every stacked pin when one call pinned a run", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const va = p.mmap(3 * PAGE_SIZE);
    const pas = pinUserPagesFast(p.mm, va, 3, { write: true, longterm: true });
    unpinUserPages(p.mm, [pas[1]!]);
    pinUserPagesFast(p.mm, va + BigInt(2 * PAGE_SIZE), 1, { longterm: false });
    const at = (i: number) => (va + BigInt(i * PAGE_SIZE)).toString(16);
    expect(m.userSpace.pages.pins().map((x) => [x.pa, x.record.va, x.record.longterm])).toEqual(
      expect.arrayContaining([
        [pas[0], Number(va), true],
        [pas[2], Number(va) + 2 * PAGE_SIZE, true],
        [pas[2], Number(va) + 2 * PAGE_SIZE, false],
      ]),
    );
    expect(m.userSpace.pages.pins()).toHaveLength(3);
    const err = await m.teardown().catch((e: unknown) => e);
    const report = (err as TeardownError).report;
    expect(report).toMatch(new RegExp(`pinned \\(longterm\\) by pid ${p.pid} at VA 0x${at(0)}`));
    expect(report).toMatch(new RegExp(`pinned \\(longterm\\) by pid ${p.pid} at VA 0x${at(2)}`));
    expect(report).toMatch(new RegExp(`pinned by pid ${p.pid} at VA 0x${at(2)}`));
    expect(report).not.toMatch(new RegExp(`at VA 0x${at(1)}`));
  });
});

describe("the page array behind pins", () => {
  it("a freed folio reads refcount 0 even once its frame is reused, so folio_get on it is still caught", async () => {
    const m = await createMachine();
    const refs = m.userSpace.pages;
    const stale = refs.alloc(0, "user_page", "test");
    refs.put(stale);
    const fresh = refs.alloc(0, "user_page", "test");
    expect(fresh.pa).toBe(stale.pa); // the allocator hands the frame out again
    expect(fresh.refcount).toBe(1);
    expect(stale.refcount).toBe(0);
    await m.diag.expectWarning({ kind: "refcount", message: /folio_get on free user page/ }, () => refs.get(stale));
    expect(fresh.refcount).toBe(1);
    refs.put(fresh);
    await m.teardown();
  });

  it("pins and unpins a physically contiguous run across 4096-frame stretches of the page array", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const n = 9000;
    const va = p.mmap(n * PAGE_SIZE, { populate: true }); // present: GUP-fast pins them
    const pas = pinUserPagesFast(p.mm, va, n, { write: true, longterm: true });
    const refs = m.userSpace.pages;
    const frames = new Set(pas.map((pa) => Math.floor(pa / PAGE_SIZE / 4096)));
    expect(frames.size).toBeGreaterThan(1);
    for (const pa of pas) expect(refs.refs(pa)!.pinCount).toBe(1);
    expect(refs.pinnedCount).toBe(n);
    for (let i = 0; i < n; ) {
      let k = 1;
      while (i + k < n && pas[i + k] === pas[i]! + k * PAGE_SIZE) k++;
      unpinUserPageRangeDirtyLock(p.mm, pas[i]!, k, false);
      i += k;
    }
    expect(refs.pinnedCount).toBe(0);
    for (const pa of pas) expect(refs.refs(pa)!.refcount).toBe(1);
    await p.exit();
    await m.teardown();
  });

  it("pins a range with holes (GUP-fast over present entries, faults for the rest) and unpins stacked pins last first", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    const n = 1100; // crosses page-table leaves (512 entries)
    const va = p.mmap(n * PAGE_SIZE);
    for (let i = 0; i < n; i += 3) p.writeMemory(va + BigInt(i * PAGE_SIZE), new Uint8Array([i & 0xff]));
    const pas = pinUserPagesFast(p.mm, va, n, { write: true, longterm: true });
    for (let i = 0; i < n; i++) expect(pas[i]).toBe(p.mm.lookupPhys(va + BigInt(i * PAGE_SIZE)));
    const refs = m.userSpace.pages;
    // A second, short-term pin of pages 10..19 stacks on the first.
    pinUserPagesFast(p.mm, va + BigInt(10 * PAGE_SIZE), 10, {});
    expect(refs.pinnedCount).toBe(n + 10);
    for (const pa of pas) unpinUserPageRangeDirtyLock(p.mm, pa, 1, false);
    // The pins left are the stacked ones, each still naming its own VA.
    const left = refs.pins().map((x) => [x.pa, x.record.va, x.record.longterm]);
    expect(left).toHaveLength(10);
    expect(left).toEqual(
      expect.arrayContaining(
        Array.from({ length: 10 }, (_, k) => [pas[10 + k], Number(va) + (10 + k) * PAGE_SIZE, true]),
      ),
    );
    unpinUserPages(p.mm, pas.slice(10, 20));
    expect(refs.pinnedCount).toBe(0);
    expect(refs.pins()).toEqual([]);
    await p.exit();
    await m.teardown();
  });
});

describe("a driver pinning on behalf of its file", () => {
  it("releases every pin when the holder's file is closed, also at exit", async () => {
    const PIN = 1;
    const pins = new Map<object, number[]>();
    const mod: KernelModule = {
      name: "pinner",
      init: async ({ machine, owner }) =>
        machine.chrdevs.register("/dev/pinner", {
          owner,
          open: (file) => {
            file.privateData = {};
          },
          ioctl: async (file, cmd, arg, cur) => {
            if (cmd !== PIN || arg === null) throw new Error("bad");
            const { va, n } = arg as { va: bigint; n: number };
            const got = await pinUserPages(cur.mm, va, n, { write: true, longterm: true });
            pins.set(file, [...(pins.get(file) ?? []), ...got]);
            return 0;
          },
          release: (file) => {
            unpinUserPages(pins.get(file) ?? []); // the one-argument form, inside close()
            pins.delete(file);
          },
        }),
      exit: async ({ machine }) => machine.chrdevs.unregister("/dev/pinner"),
    };
    const m = await createMachine({ modules: [mod] });
    await m.boot();
    const p = m.spawnProcess();
    const va = p.mmap(8 * PAGE_SIZE);
    const fd = await p.open("/dev/pinner");
    await p.ioctl(fd, PIN, { va, n: 3 });
    await p.ioctl(fd, PIN, { va: va + BigInt(2 * PAGE_SIZE), n: 4 });
    expect(m.userSpace.pages.pinnedCount).toBe(7);
    await p.close(fd);
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    expect(m.pages.siteCount("user_page")).toBe(6); // still mapped by p
    await p.exit();

    const q = m.spawnProcess();
    const qva = q.mmap(PAGE_SIZE);
    const qfd = await q.open("/dev/pinner");
    await q.ioctl(qfd, PIN, { va: qva, n: 1 });
    await q.exit(); // exit_mm first (the page stays pinned), then exit_files unpins it
    expect(m.userSpace.pages.pinnedCount).toBe(0);
    expect(m.pages.siteCount("user_page")).toBe(0);
    await m.teardown();
  });

  it("an anonymous file made by a driver is closed at exit like any other", async () => {
    const m = await createMachine();
    const p = m.spawnProcess();
    let released = 0;
    const f = anonInodeGetFile("[x]", { release: () => void released++ }, null, { ctx: p });
    expect(fdInstall(p, f)).toBe(0);
    await p.exit();
    expect(released).toBe(1);
    await m.teardown();
  });
});

describe("locked memory accounting", () => {
  it("charges mm->locked_vm against RLIMIT_MEMLOCK unless CAP_IPC_LOCK", async () => {
    const m = await createMachine();
    const user = m.spawnProcess({ uid: 1000, rlimits: { RLIMIT_MEMLOCK: 16 * PAGE_SIZE } });
    expect(memlockLimitPages(user)).toBe(16);
    expect(capable("CAP_IPC_LOCK", user)).toBe(false);
    accountLockedVm(user.mm, 10, true, user);
    expect(() => accountLockedVm(user.mm, 7, true, user)).toThrow(expect.objectContaining({ code: "ENOMEM" }));
    expect(user.mm.lockedVm).toBe(10);
    accountLockedVm(user.mm, 10, false, user);
    expect(user.mm.lockedVm).toBe(0);

    const locker = m.spawnProcess({ uid: 1000, capabilities: ["CAP_IPC_LOCK"], rlimits: { RLIMIT_MEMLOCK: 0 } });
    accountLockedVm(locker.mm, 100, true, locker);
    expect(locker.mm.lockedVm).toBe(100);
    accountLockedVm(locker.mm, 100, false, locker);
    await m.teardown();
  });

  it("charges user->locked_vm across the user's processes, and raising the limit needs CAP_SYS_RESOURCE", async () => {
    const m = await createMachine();
    const a = m.spawnProcess({ uid: 1000, rlimits: { RLIMIT_MEMLOCK: 8 * PAGE_SIZE } });
    const b = m.spawnProcess({ uid: 1000, rlimits: { RLIMIT_MEMLOCK: 8 * PAGE_SIZE } });
    incrUserLockedVm(a.cred.user, 6, memlockLimitPages(a));
    expect(() => incrUserLockedVm(b.cred.user, 3, memlockLimitPages(b))).toThrow(
      expect.objectContaining({ code: "ENOMEM" }),
    );
    expect(() => b.setrlimit("RLIMIT_MEMLOCK", 64 * PAGE_SIZE)).toThrow(expect.objectContaining({ code: "EPERM" }));
    b.setrlimit("RLIMIT_MEMLOCK", 4 * PAGE_SIZE); // lowering is allowed
    const root = m.spawnProcess();
    root.setrlimit("RLIMIT_MEMLOCK", 1 << 30);
    decrUserLockedVm(a.cred.user, 6);
    await m.teardown();
  });

  it("fails teardown while pinned_vm or locked_vm are still charged", async () => {
    const m = await createMachine();
    const p = m.spawnProcess({ uid: 7 });
    p.mm.pinnedVm += 3;
    incrUserLockedVm(p.cred.user, 3, 100);
    const err = (await m.teardown().catch((e: unknown) => e)) as TeardownError;
    expect(err.report).toMatch(/mm of pid 1: pinned_vm is 3 pages/);
    expect(err.report).toMatch(/user 7: locked_vm is 3 pages/);
  });
});
