// Scheduling class of the calling thread. A session worker that is only getting ready (Node
// start-up, snapshot index, JIT warm-up) runs as SCHED_IDLE, so it takes no CPU from a guest
// being resumed; it returns to SCHED_OTHER before it may accept a guest.
import { readdirSync, readFileSync } from 'node:fs'
import { UffdError } from './errors.js'
import { errno, libc } from './libc.js'

const SCHED_OTHER = 0
const SCHED_IDLE = 5
const param = Buffer.alloc(8) // struct sched_param { int sched_priority; }: 0 for both classes

/** The calling thread's kernel thread id. */
export function threadId(): number {
  return libc.gettid()
}

/** True where a thread may leave SCHED_IDLE again: the kernel lets only CAP_SYS_NICE (or a
 * raised RLIMIT_NICE) do that, so without root a worker never enters it. */
export function canLowerThreadPriority(): boolean {
  return libc.geteuid() === 0
}

/** Puts thread `tid` (0: the caller) in SCHED_IDLE (`idle`) or back in SCHED_OTHER. */
export function setThreadIdle(tid: number, idle: boolean): void {
  if (libc.sched_setscheduler(tid, idle ? SCHED_IDLE : SCHED_OTHER, param) < 0) {
    throw new UffdError('sched_setscheduler', errno(), `thread ${tid || 'self'} to ${idle ? 'SCHED_IDLE' : 'SCHED_OTHER'}`)
  }
}

/** This process's thread ids (/proc/self/task). */
export function threadIds(): number[] {
  try {
    return readdirSync('/proc/self/task').map(Number)
  } catch {
    return []
  }
}

/** This process's threads in SCHED_IDLE (the policy field of /proc/self/task/T/stat). */
export function idleClassThreads(): number[] {
  const out: number[] = []
  for (const tid of threadIds()) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'latin1')
      // Fields after the parenthesised name start at field 3; the policy is field 41.
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38]) === SCHED_IDLE) out.push(tid)
    } catch {
      /* exited meanwhile */
    }
  }
  return out
}
