/**
 * Notifier chains: ordered callbacks other subsystems hook into (the IOMMU core listens to bus events this way).
 */

/** Don't care. @linux NOTIFY_DONE */
export const NOTIFY_DONE = 0x0000;
/** Suits me. @linux NOTIFY_OK */
export const NOTIFY_OK = 0x0001;
/** Stop calling further callbacks. @linux NOTIFY_STOP_MASK */
export const NOTIFY_STOP_MASK = 0x8000;
/** Bad/veto action. @linux NOTIFY_BAD */
export const NOTIFY_BAD = NOTIFY_STOP_MASK | 0x0002;
/** Clean way to return from the notifier and stop further calls. @linux NOTIFY_STOP */
export const NOTIFY_STOP = NOTIFY_OK | NOTIFY_STOP_MASK;

/**
 * Wrap an errno into a notifier return value.
 * @linux notifier_from_errno
 */
export function notifierFromErrno(errno: number): number {
  return errno ? NOTIFY_STOP_MASK | (NOTIFY_OK - errno) : NOTIFY_OK;
}

/**
 * Recover the errno from a notifier return value.
 * @linux notifier_to_errno
 */
export function notifierToErrno(ret: number): number {
  const r = ret & ~NOTIFY_STOP_MASK;
  return r > NOTIFY_OK ? NOTIFY_OK - r : 0;
}

/**
 * One callback on a chain. Higher priority runs first; equal priorities run in registration order.
 * @linux struct notifier_block
 */
export interface NotifierBlock<T> {
  notifierCall(action: number, data: T): number | Promise<number>;
  priority?: number;
}

/**
 * A notifier chain whose callbacks may sleep: called with `await`, in priority order, stopping at a return value
 * with {@link NOTIFY_STOP_MASK}. A call walks the chain as it was when the call began, so a callback that
 * unregisters itself does not disturb the walk.
 * @linux struct blocking_notifier_head
 */
export class BlockingNotifier<T> {
  private chain: NotifierBlock<T>[] = [];

  /**
   * Add `nb` to the chain. Returns false (and leaves the chain alone) when it is already on it.
   * @linux blocking_notifier_chain_register
   */
  register(nb: NotifierBlock<T>): boolean {
    if (this.chain.includes(nb)) return false;
    const p = nb.priority ?? 0;
    let i = 0;
    while (i < this.chain.length && (this.chain[i]!.priority ?? 0) >= p) i++;
    this.chain = [...this.chain.slice(0, i), nb, ...this.chain.slice(i)];
    return true;
  }

  /**
   * Remove `nb`; returns false when it was not registered (-ENOENT in Linux).
   * @linux blocking_notifier_chain_unregister
   */
  unregister(nb: NotifierBlock<T>): boolean {
    const i = this.chain.indexOf(nb);
    if (i < 0) return false;
    this.chain = this.chain.filter((x) => x !== nb);
    return true;
  }

  /** Number of registered callbacks. */
  get length(): number {
    return this.chain.length;
  }

  /**
   * Call every callback with `action` and `data`; returns the last callback's value (NOTIFY_DONE for an empty
   * chain), stopping early at one with the stop bit.
   * @linux blocking_notifier_call_chain
   */
  async callChain(action: number, data: T): Promise<number> {
    let ret = NOTIFY_DONE;
    for (const nb of this.chain) {
      ret = await nb.notifierCall(action, data);
      if (ret & NOTIFY_STOP_MASK) break;
    }
    return ret;
  }
}
