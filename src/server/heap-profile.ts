// FAULTLINE_HEAP_PROFILE=PREFIX: V8's sampling heap profiler over each session's run, objects
// already collected by the scavenger included (what a fault loop allocates dies young), written
// to PREFIX.<session>.heapprofile (Chrome DevTools' format). `npm run profile -- --heap` uses it.
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'

/** The profile prefix from the environment, or undefined when off. */
export const HEAP_PROFILE_PREFIX = process.env.FAULTLINE_HEAP_PROFILE || undefined

export interface HeapSampling {
  /** Stops sampling and writes the profile to `path`. */
  stop(path: string): Promise<void>
}

export async function startHeapSampling(): Promise<HeapSampling> {
  const inspector = new Session()
  inspector.connect()
  await inspector.post('HeapProfiler.enable')
  // The include* flags are newer than @types/node's protocol typings.
  const params = { samplingInterval: 64, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }
  await inspector.post('HeapProfiler.startSampling', params as { samplingInterval: number })
  return {
    async stop(path) {
      const { profile } = await inspector.post('HeapProfiler.stopSampling')
      inspector.disconnect()
      writeFileSync(path, JSON.stringify(profile))
    },
  }
}
