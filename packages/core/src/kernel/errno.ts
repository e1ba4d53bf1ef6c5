/**
 * Linux error numbers used by the IOMMU subsystem, with the kernel's numeric values
 * (include/uapi/asm-generic/errno-base.h, errno.h and include/linux/errno.h for EPROBE_DEFER).
 * @linux include/uapi/asm-generic/errno-base.h
 */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ERANGE: 34,
  EDEADLK: 35,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ETIMEDOUT: 110,
  EPROBE_DEFER: 517,
} as const;

/** The symbolic name of an errno, such as `'EBUSY'`. */
export type ErrnoCode = keyof typeof ERRNO;

const BY_NUMBER = new Map<number, ErrnoCode>(Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoCode]));

/** The symbolic name of a numeric errno (positive or negative), or `undefined` when it is not one we model. */
export function errnoName(errno: number): ErrnoCode | undefined {
  return BY_NUMBER.get(Math.abs(errno));
}

/**
 * A failing kernel call. Carries the positive `errno` and its symbolic `code`, so user code can write
 * `await expect(p).rejects.toMatchObject({ code: 'EBUSY' })`.
 * @linux the negative errno returned by kernel functions (ERR_PTR / PTR_ERR)
 */
export class KernelError extends Error {
  /** Positive errno value, e.g. 16 for EBUSY. */
  readonly errno: number;
  /** Symbolic name, e.g. `'EBUSY'`. */
  readonly code: ErrnoCode;

  constructor(code: ErrnoCode, message?: string) {
    super(message ? `${code}: ${message}` : code);
    this.name = "KernelError";
    this.code = code;
    this.errno = ERRNO[code];
  }

  /** The kernel's return-value convention: the negated errno. */
  get negErrno(): number {
    return -this.errno;
  }
}

/**
 * Build a `KernelError` from a code, for `throw kerr('EINVAL', 'why')`.
 * @linux ERR_PTR(-errno)
 */
export function kerr(code: ErrnoCode, message?: string): KernelError {
  return new KernelError(code, message);
}

/**
 * True when `value` is an error in the kernel sense.
 * @linux IS_ERR
 */
export function isErr(value: unknown): value is KernelError {
  return value instanceof KernelError;
}

/**
 * The errno (negative, as the kernel returns it) carried by an error value; 0 for a non-error.
 * @linux PTR_ERR
 */
export function ptrErr(value: unknown): number {
  return value instanceof KernelError ? -value.errno : 0;
}

/**
 * Whether an error thrown by a kernel call has the given code.
 */
export function hasErrno(e: unknown, code: ErrnoCode): e is KernelError {
  return e instanceof KernelError && e.code === code;
}
