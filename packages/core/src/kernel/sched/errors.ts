/**
 * Errors thrown by the simulated kernel's concurrency primitives. Both are bugs in the code under test, never
 * ordinary kernel failures, so they are plain `Error`s rather than `KernelError`s with an errno.
 */

/**
 * Thrown into every task caught in a deadlock (and by a recursive lock), so a test fails instead of hanging.
 * A `deadlock` diagnostic naming the tasks and what they wait on is recorded first.
 * @linux the lockdep "possible recursive locking" / hung-task reports
 */
export class DeadlockError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DeadlockError";
  }
}

/**
 * Thrown when a lock assertion fails; a `lock-assert` diagnostic naming the lock and the task is recorded first.
 * @linux lockdep_assert_held
 */
export class LockAssertionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LockAssertionError";
  }
}
