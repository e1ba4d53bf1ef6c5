import { describe, expect, it } from "vitest";
import {
  anonInodeGetFile,
  createMachine,
  currentProcess,
  type File,
  type FileOperations,
  fdInstall,
  fget,
  fput,
  getFile,
  type KernelModule,
  kerr,
  type Machine,
  moduleRefcount,
  O_RDONLY,
  resolve,
  Tokens,
} from "../../src/index.js";

/** A test driver: /dev/test whose ioctls make anonymous files, echo their argument, or fail. */
interface TestDev {
  events: string[];
  /** Files the "kernel" holds a reference on. */
  held: File[];
  lastArg: unknown;
}

const IOCTL_ECHO = 1;
const IOCTL_NEW_ANON = 2;
const IOCTL_NEED_ARG = 3;

function testModule(dev: TestDev, opts: { failOpen?: boolean } = {}): KernelModule {
  let fops: FileOperations;
  const anonFops = (n: number): FileOperations => ({
    release: () => {
      dev.events.push(`release anon${n}`);
    },
    read: (_f, len) => new Uint8Array(len).fill(n),
  });
  let nAnon = 0;
  return {
    name: "testdev",
    init: async ({ machine, owner }) => {
      fops = {
        owner,
        open: (file, cur) => {
          if (opts.failOpen) throw kerr("EPERM", "nope");
          file.privateData = { opener: cur.pid };
          dev.events.push(`open by ${cur.pid}`);
        },
        release: (file) => {
          dev.events.push(`release ${(file.privateData as { opener: number }).opener}`);
        },
        ioctl: (_file, cmd, arg, cur) => {
          if (currentProcess() !== cur) throw new Error("current is not the caller");
          if (cmd === IOCTL_ECHO) {
            dev.lastArg = arg;
            if (arg !== null && !(arg instanceof Uint8Array)) (arg as { out: number }).out = 42;
            return 7;
          }
          if (cmd === IOCTL_NEW_ANON) {
            const f = anonInodeGetFile(`[anon${++nAnon}]`, { ...anonFops(nAnon), owner }, undefined);
            dev.held.push(getFile(f));
            return fdInstall(cur, f);
          }
          if (cmd === IOCTL_NEED_ARG) {
            if (arg === null) throw kerr("EFAULT", "no argument");
            return 0;
          }
          throw kerr("ENOTTY");
        },
        write: (_f, bytes) => bytes.byteLength,
      };
      machine.chrdevs.register("/dev/test", fops);
    },
    exit: async ({ machine }) => {
      machine.chrdevs.unregister("/dev/test");
    },
  };
}

async function machineWith(dev: TestDev, opts: { failOpen?: boolean } = {}): Promise<Machine> {
  const m = await createMachine({ modules: [testModule(dev, opts)] });
  await m.boot();
  return m;
}

function newDev(): TestDev {
  return { events: [], held: [], lastArg: undefined };
}

describe("fd table and char devices", () => {
  it("hands out the lowest free fd and reuses closed ones", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const p = m.spawnProcess();
    expect(await p.open("/dev/test")).toBe(0);
    expect(await p.open("/dev/test")).toBe(1);
    expect(await p.open("/dev/test")).toBe(2);
    await p.close(1);
    expect(await p.open("/dev/test")).toBe(1);
    await p.close(0);
    await p.close(2);
    expect(await p.open("/dev/test")).toBe(0);
    expect(p.dup(0)).toBe(2);
    expect(p.files.size).toBe(3);
    await p.close(0);
    await p.close(1);
    await p.close(2);
    expect(dev.events.filter((e) => e.startsWith("release"))).toHaveLength(5); // one per open; dup shares
    await m.teardown();
  });

  it("rejects bad fds with EBADF, unknown devices with ENOENT, and fails EMFILE at RLIMIT_NOFILE", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const p = m.spawnProcess({ rlimits: { RLIMIT_NOFILE: 2 } });
    await expect(p.close(0)).rejects.toMatchObject({ code: "EBADF" });
    await expect(p.ioctl(5, IOCTL_ECHO, null)).rejects.toMatchObject({ code: "EBADF" });
    await expect(p.ioctl(-1, IOCTL_ECHO, null)).rejects.toMatchObject({ code: "EBADF" });
    await expect(p.read(3, 1)).rejects.toMatchObject({ code: "EBADF" });
    await expect(p.open("/dev/nope")).rejects.toMatchObject({ code: "ENOENT" });
    await p.open("/dev/test");
    await p.open("/dev/test");
    await expect(p.open("/dev/test")).rejects.toMatchObject({ code: "EMFILE" });
    // The failed open did not leave a file behind: only two opens were seen.
    expect(dev.events).toEqual(["open by 1", "open by 1"]);
    await p.exit();
    await m.teardown();
  });

  it("passes the ioctl argument as given, maps a missing ioctl to ENOTTY, and checks read/write modes", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const p = m.spawnProcess();
    const fd = await p.open("/dev/test");
    const cmd = { size: 0, out: 0 };
    expect(await p.ioctl(fd, IOCTL_ECHO, cmd)).toBe(7);
    expect(dev.lastArg).toBe(cmd);
    expect(cmd.out).toBe(42);
    const bytes = new Uint8Array(8);
    await p.ioctl(fd, IOCTL_ECHO, bytes);
    expect(dev.lastArg).toBe(bytes);
    await expect(p.ioctl(fd, IOCTL_NEED_ARG, null)).rejects.toMatchObject({ code: "EFAULT" });
    await expect(p.ioctl(fd, 99, null)).rejects.toMatchObject({ code: "ENOTTY" });
    // /dev/test has write but no read.
    expect(await p.write(fd, new Uint8Array(5))).toBe(5);
    await expect(p.read(fd, 4)).rejects.toMatchObject({ code: "EINVAL" });
    const ro = await p.open("/dev/test", O_RDONLY);
    await expect(p.write(ro, new Uint8Array(1))).rejects.toMatchObject({ code: "EBADF" });
    // An anonymous file without ioctl.
    const afd = await p.ioctl(fd, IOCTL_NEW_ANON, null);
    await expect(p.ioctl(afd, 1, null)).rejects.toMatchObject({ code: "ENOTTY" });
    expect([...(await p.read(afd, 3))]).toEqual([1, 1, 1]);
    await p.exit();
    for (const f of dev.held) await fput(f);
    await m.teardown();
  });

  it("keeps an anonymous file alive while the kernel holds it; release runs once, on the last fput", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const owner = m.moduleOwner("testdev")!;
    const p = m.spawnProcess();
    const fd = await p.open("/dev/test");
    const afd = await p.ioctl(fd, IOCTL_NEW_ANON, null);
    expect(afd).toBe(1);
    const anon = dev.held[0]!;
    expect(anon.name).toBe("anon_inode:[anon1]");
    expect(anon.count).toBe(2); // the fd and the kernel
    expect(moduleRefcount(owner)).toBe(2); // both files pin the module
    await p.close(afd);
    expect(anon.count).toBe(1);
    expect(dev.events).not.toContain("release anon1");
    // fget on the closed fd fails; the kernel's reference still works.
    expect(() => fget(p, afd)).toThrow(expect.objectContaining({ code: "EBADF" }));
    await fput(anon);
    expect(dev.events).toContain("release anon1");
    expect(anon.released).toBe(true);
    await p.close(fd);
    expect(moduleRefcount(owner)).toBe(0);
    await m.teardown();
  });

  it("an fd shared by fork and dup is released only when the last fd closes", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const p = m.spawnProcess();
    const fd = await p.open("/dev/test");
    const c = p.fork();
    const file = fget(p, fd);
    expect(file === fget(c, fd)).toBe(true);
    await fput(file);
    await fput(file);
    expect(file.count).toBe(2);
    await p.close(fd);
    expect(dev.events).toEqual(["open by 1"]);
    await c.exit();
    expect(dev.events).toEqual(["open by 1", "release 1"]);
    await m.teardown();
  });

  it("a failed open returns the fd, releases nothing and drops the module pin", async () => {
    const dev = newDev();
    const m = await machineWith(dev, { failOpen: true });
    const p = m.spawnProcess();
    await expect(p.open("/dev/test")).rejects.toMatchObject({ code: "EPERM" });
    expect(p.files.size).toBe(0);
    expect(moduleRefcount(m.moduleOwner("testdev"))).toBe(0);
    expect(dev.events).toEqual([]);
    await m.teardown();
  });

  it("exits processes at teardown before unloading modules, and reports a file leaked by the kernel", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    expect(resolve(m.container, Tokens.chrdevs) === m.chrdevs).toBe(true);
    const p = m.spawnProcess();
    const fd = await p.open("/dev/test");
    await p.ioctl(fd, IOCTL_NEW_ANON, null);
    // p never exits and the kernel never drops its anon reference: teardown names the file and the module.
    await expect(m.teardown()).rejects.toThrow(/file anon_inode:\[anon1\] still held/);
    expect(dev.events).toContain("release 1");
  });

  it("syscalls of an exited process fail with ESRCH", async () => {
    const dev = newDev();
    const m = await machineWith(dev);
    const p = m.spawnProcess();
    await p.open("/dev/test");
    await p.exit();
    expect(p.exited).toBe(true);
    await expect(p.open("/dev/test")).rejects.toMatchObject({ code: "ESRCH" });
    expect(() => p.mmap(4096)).toThrow(expect.objectContaining({ code: "ESRCH" }));
    expect(dev.events).toEqual(["open by 1", "release 1"]);
    expect(m.userSpace.processes()).toHaveLength(0);
    await m.teardown();
  });

  it("gives each process its own pid and credentials", async () => {
    const m = await createMachine();
    const root = m.spawnProcess();
    const user = m.spawnProcess({ uid: 1000 });
    const lock = m.spawnProcess({ uid: 1000, capabilities: ["CAP_IPC_LOCK"] });
    expect([root.pid, user.pid, lock.pid]).toEqual([1, 2, 3]);
    expect(root.cred.has("CAP_IPC_LOCK")).toBe(true);
    expect(user.cred.has("CAP_IPC_LOCK")).toBe(false);
    expect(lock.cred.has("CAP_IPC_LOCK")).toBe(true);
    expect(user.cred.user === lock.cred.user).toBe(true);
    expect(() => m.spawnProcess({ capabilities: ["CAP_TYPO"] })).toThrow(expect.objectContaining({ code: "EINVAL" }));
    await m.teardown();
  });
});
