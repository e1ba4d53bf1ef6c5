import { PhysicalMemory } from "../src/platform/memory.js";
import { PageAllocator } from "../src/platform/page-alloc.js";
const MiB = 2 ** 20;
const a0 = new PageAllocator(new PhysicalMemory({ size: 256 * MiB }), { recordFreeStacks: false });
const N = 200000;
for (let r = 0; r < 5; r++) { for (let i = 0; i < N; i++) a0.freePages(a0.allocPages(0, "b"), 0); }
