/**
 * The process on whose behalf the kernel is running: set for the duration of each system call, so kernel code deep
 * in an ioctl can find the caller's address space, credentials and fd table, as Linux code uses `current`.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Process } from "./process.js";

// Keyed by async context, not shared state: two machines in one Node process each see their own caller.
const CURRENT = new AsyncLocalStorage<Process>();

/**
 * The process making the system call being served, or undefined outside a system call (kernel threads, tests
 * calling kernel functions directly).
 * @linux current (the task_struct of the caller)
 */
export function currentProcess(): Process | undefined {
  return CURRENT.getStore();
}

/**
 * Run `fn` as a system call of `process` (sets {@link currentProcess} for everything it awaits).
 * @linux the syscall entry that makes `current` the calling task
 */
export function runAsProcess<T>(process: Process, fn: () => T): T {
  return CURRENT.run(process, fn);
}
