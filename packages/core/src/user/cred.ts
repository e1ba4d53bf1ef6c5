/**
 * Credentials, capabilities, per-user accounting and resource limits of simulated processes.
 * Mirrors `include/linux/cred.h` (struct cred), `kernel/user.c` (struct user_struct), `include/uapi/linux/capability.h`
 * and the RLIMIT_* defaults of `include/asm-generic/resource.h`.
 */
import { kerr } from "../kernel/errno.js";

/**
 * The capabilities the simulation knows by name (all of Linux's; only a few are checked).
 * @linux include/uapi/linux/capability.h
 */
export const CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_LINUX_IMMUTABLE",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_BROADCAST",
  "CAP_NET_ADMIN",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_IPC_OWNER",
  "CAP_SYS_MODULE",
  "CAP_SYS_RAWIO",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_PACCT",
  "CAP_SYS_ADMIN",
  "CAP_SYS_BOOT",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_SYS_TIME",
  "CAP_SYS_TTY_CONFIG",
  "CAP_MKNOD",
  "CAP_LEASE",
  "CAP_AUDIT_WRITE",
  "CAP_AUDIT_CONTROL",
  "CAP_SETFCAP",
  "CAP_MAC_OVERRIDE",
  "CAP_MAC_ADMIN",
  "CAP_SYSLOG",
  "CAP_WAKE_ALARM",
  "CAP_BLOCK_SUSPEND",
  "CAP_AUDIT_READ",
  "CAP_PERFMON",
  "CAP_BPF",
  "CAP_CHECKPOINT_RESTORE",
] as const;

/**
 * A capability name such as `"CAP_IPC_LOCK"`.
 * @linux the CAP_* numbers of include/uapi/linux/capability.h
 */
export type Capability = (typeof CAPABILITIES)[number];

/**
 * What `spawnProcess` accepts for capabilities: every capability (`"root"`), none, or a list.
 * @linux the effective set of struct cred (cap_effective)
 */
export type CapabilitySpec = "root" | "none" | readonly string[];

/**
 * Per-user accounting shared by every process of one uid on a machine. `lockedVm` counts pages charged to the
 * user, as iommufd's `IOPT_PAGES_ACCOUNT_USER` mode and io_uring do.
 * @linux struct user_struct (kernel/user.c)
 */
export class UserStruct {
  /** Pages charged to this user against RLIMIT_MEMLOCK. @linux user_struct.locked_vm */
  lockedVm = 0;

  constructor(
    /** @linux user_struct.uid */
    readonly uid: number,
  ) {}
}

/**
 * The credentials of a process: its uid, its user_struct, and its effective capabilities.
 * @linux struct cred
 */
export class Cred {
  private readonly caps: ReadonlySet<string>;

  constructor(
    /** @linux cred.uid / cred.euid (not distinguished here) */
    readonly uid: number,
    /** @linux cred.user */
    readonly user: UserStruct,
    caps: Iterable<string>,
  ) {
    this.caps = new Set(caps);
  }

  /** The effective capabilities. @linux cred.cap_effective */
  get capabilities(): ReadonlySet<string> {
    return this.caps;
  }

  /**
   * Whether these credentials carry `cap`.
   * @linux has_capability / ns_capable (in the initial user namespace)
   */
  has(cap: Capability | string): boolean {
    return this.caps.has(cap);
  }
}

/**
 * The capability set a spec stands for. Unknown names are rejected (EINVAL) so a typo cannot silently drop one.
 * @linux cap_full / CAP_EMPTY_SET
 */
export function capabilitySet(spec: CapabilitySpec): Set<string> {
  if (spec === "root") return new Set(CAPABILITIES);
  if (spec === "none") return new Set();
  const known = new Set<string>(CAPABILITIES);
  for (const c of spec) if (!known.has(c)) throw kerr("EINVAL", `unknown capability ${c}`);
  return new Set(spec);
}

/**
 * The resource limits the simulation enforces, in the kernel's units (bytes for RLIMIT_MEMLOCK, a count for
 * RLIMIT_NOFILE). Soft and hard limits are one value here.
 * @linux struct rlimit, signal_struct.rlim
 */
export interface Rlimits {
  /** Bytes of memory that may be locked or pinned. @linux RLIMIT_MEMLOCK */
  RLIMIT_MEMLOCK: number;
  /** The first fd number that may not be allocated. @linux RLIMIT_NOFILE */
  RLIMIT_NOFILE: number;
}

/**
 * The name of a resource limit.
 * @linux RLIMIT_MEMLOCK, RLIMIT_NOFILE
 */
export type RlimitResource = keyof Rlimits;

/**
 * Default RLIMIT_MEMLOCK: 8 MiB.
 * @linux MLOCK_LIMIT
 */
export const MLOCK_LIMIT = 8 * 1024 * 1024;

/**
 * Default RLIMIT_NOFILE.
 * @linux INR_OPEN_CUR
 */
export const INR_OPEN_CUR = 1024;

/**
 * Unlimited, for a resource limit.
 * @linux RLIM_INFINITY
 */
export const RLIM_INFINITY = Number.POSITIVE_INFINITY;

/**
 * The limits a process starts with.
 * @linux INIT_RLIMITS
 */
export function defaultRlimits(): Rlimits {
  return { RLIMIT_MEMLOCK: MLOCK_LIMIT, RLIMIT_NOFILE: INR_OPEN_CUR };
}
