import { describe, expect, it } from "vitest";
import {
  createMachine,
  DmaFault,
  defaultPlatform,
  type HwModelFactory,
  type KernelModule,
  Mutex,
  PlatformError,
  resolve,
  TeardownError,
  Tokens,
} from "../../src/index.js";

describe("createMachine", () => {
  it("boots the default platform, routes DMA straight to memory without an IOMMU model, and tears down clean", async () => {
    const m = await createMachine({ platform: defaultPlatform(), seed: 7 });
    await m.boot();
    expect(m.booted).toBe(true);
    const dev = m.device("uart0");
    dev.dmaWrite(0x10_0000, new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    expect(m.memory.read32(0x10_0000)).toBe(0xefbeadde);
    expect([...dev.dmaRead(0x10_0001, 2)]).toEqual([0xad, 0xbe]);
    await m.teardown();
  });

  it("validates a raw JSON platform and names the bad path", async () => {
    await expect(
      createMachine({ platform: { iommus: [{ name: "x", kind: "mock", mmio: { base: "lots" } }] } }),
    ).rejects.toThrow(PlatformError);
    await expect(
      createMachine({ platform: { iommus: [{ name: "x", kind: "mock", mmio: { base: "lots" } }] } }),
    ).rejects.toThrow(/iommus\[0\]\.mmio\.base/);
  });

  it("gives each machine its own container and services", async () => {
    const a = await createMachine();
    const b = await createMachine();
    expect(resolve(a.container, Tokens.memory) === a.memory).toBe(true);
    expect(resolve(b.container, Tokens.memory) === b.memory).toBe(true);
    // (identity checks on purpose: vitest deep-compares huge objects on a failed toBe)
    expect(a.memory === b.memory).toBe(false);
    expect(a.scheduler === b.scheduler).toBe(false);
    a.memory.write32(0x2000, 1);
    expect(b.memory.read32(0x2000)).toBe(0);
    await a.teardown();
    await b.teardown();
  });

  it("throws ENODEV for an unknown device", async () => {
    const m = await createMachine();
    await m.boot();
    expect(() => m.device("nope")).toThrow(expect.objectContaining({ code: "ENODEV" }));
    await m.teardown();
  });

  it("fails teardown with a report naming a leaked device reference and its holder", async () => {
    const m = await createMachine();
    await m.boot();
    m.driverCore.deviceFor("nic0")!.get("leaky_test_holder");
    const err = await m.teardown().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TeardownError);
    expect((err as TeardownError).report).toMatch(/nic0 still held by: .*leaky_test_holder\(1\)/);
  });

  it("fails teardown on leaked pages, naming the allocation site", async () => {
    const m = await createMachine();
    await m.boot();
    m.pages.allocPages(0, "test_leaky_site");
    await expect(m.teardown()).rejects.toThrow(/test_leaky_site/);
  });

  it("fails teardown on an unexpected warning, and not on an expected one", async () => {
    const m = await createMachine();
    await m.boot();
    m.diag.warnOn(true, "something odd");
    await expect(m.teardown()).rejects.toThrow(/something odd/);

    const n = await createMachine();
    await n.boot();
    await n.diag.expectWarning(/expected oddity/, () => n.diag.warnOn(true, "expected oddity"));
    await n.teardown();
  });

  it("reports a lock still held at teardown with the lock's name", async () => {
    const m = await createMachine();
    await m.boot();
    const lock = new Mutex(m.scheduler, "test_lock");
    await lock.lock();
    await expect(m.teardown()).rejects.toThrow(/test_lock/);
  });

  it("loads modules in order at boot, unloads them in reverse at teardown, and refuses unload while in use", async () => {
    const events: string[] = [];
    const mk = (name: string): KernelModule => ({
      name,
      init: async ({ owner }) => {
        events.push(`init ${name} ${owner.name}`);
      },
      exit: async () => {
        events.push(`exit ${name}`);
      },
    });
    const m = await createMachine({ modules: [mk("a"), mk("b")] });
    await m.boot();
    expect(events).toEqual(["init a a", "init b b"]);
    const owner = m.moduleOwner("a")!;
    const { tryModuleGet, modulePut } = await import("../../src/index.js");
    expect(tryModuleGet(owner, "user")).toBe(true);
    await expect(m.modules.unload("a")).rejects.toMatchObject({ code: "EBUSY" });
    modulePut(owner, "user");
    await m.teardown();
    expect(events).toEqual(["init a a", "init b b", "exit b", "exit a"]);
  });

  it("builds a hardware model for every IOMMU of a registered kind and routes its devices' DMA through it", async () => {
    // A toy model: translates iova -> iova + 1 MiB, faults above 16 MiB.
    const factory: HwModelFactory = (ctx) => ({
      name: ctx.name,
      kind: "mock",
      mmioSize: 0x1000,
      mmio: { read32: () => 0x1234, write32: () => {} },
      translate(req, out) {
        if (req.iova >= 16 << 20) {
          out.faultCode = 1;
          out.faultReason = "beyond toy aperture";
          return;
        }
        out.faultCode = 0;
        out.faultReason = "";
        out.pa = req.iova + (1 << 20);
        out.length = 0x1000 - (req.iova & 0xfff);
      },
    });
    const m = await createMachine({ modules: [{ name: "toy", hardware: [{ kind: "mock", factory }] }] });
    await m.boot();
    expect(m.hw.has("mock0")).toBe(true);
    expect(m.mmio.read32(m.platform.iommus.find((i) => i.name === "mock0")!.mmio.base)).toBe(0x1234);
    m.device("mock-dev0").dmaWrite(0x3000, new Uint8Array([7]));
    expect(m.memory.read8(0x3000 + (1 << 20))).toBe(7);
    expect(() => m.device("mock-dev0").dmaRead(16 << 20, 4)).toThrow(DmaFault);
    await m.teardown();
  });

  it("refuses to boot twice and to tear down twice", async () => {
    const m = await createMachine();
    await m.boot();
    await expect(m.boot()).rejects.toMatchObject({ code: "EBUSY" });
    await m.teardown();
    await expect(m.teardown()).rejects.toMatchObject({ code: "EINVAL" });
  });
});
