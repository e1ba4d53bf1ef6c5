/** The simulated kernel's scheduler and sleeping locks. */
export { Completion } from "./completion.js";
export { DeadlockError, LockAssertionError } from "./errors.js";
export { FifoStrategy } from "./fifo.js";
export {
  formatSite,
  type HeldLock,
  type LockInstance,
  type LockMode,
  LockOrderRecorder,
  lockAssertFailed,
} from "./lockdep.js";
export { type LockOptions, Mutex } from "./mutex.js";
export { type PctOptions, PctStrategy, pctScheduler } from "./pct.js";
export { RandomStrategy, randomScheduler } from "./random.js";
export { parseSchedule, ReplayDivergenceError, ReplayStrategy, replayScheduler } from "./replay.js";
export { RwSemaphore } from "./rwsem.js";
export { type BlockOptions, Scheduler, type SchedulerOptions } from "./scheduler.js";
export type { ScheduleStrategy } from "./strategy.js";
export { Task, type TaskOutcome, type TaskState, type WaitTarget, type WakeReason } from "./task.js";
export { type WaitEventOptions, WaitQueue } from "./waitqueue.js";
